# A module of hello.tcl.
proc greeting {name} {
    return "Hello, $name! (greeting.tcl)"
}
