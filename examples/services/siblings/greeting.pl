# A module of hello.pl.
use strict;
use warnings;

sub greeting {
    my ($name) = @_;
    return "Hello, $name! (greeting.pl)";
}

1;
