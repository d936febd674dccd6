use strict;
use warnings;

# Prints each parameter as name=value, one a line, sorted.
print "$_=$Hook_params{$_}\n" for sort keys %Hook_params;
