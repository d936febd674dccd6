# [info script] is this script, wherever it is staged.
source [file join [file dirname [info script]] greeting.tcl]

set name world
if {[info exists Hook_params(name)]} { set name $Hook_params(name) }
puts [greeting $name]
