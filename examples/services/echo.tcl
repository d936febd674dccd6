# Prints each parameter as name=value, one a line, sorted.
foreach name [lsort [array names Hook_params]] {
    puts "$name=$Hook_params($name)"
}
