set name world
if {[info exists Hook_params(name)]} { set name $Hook_params(name) }
puts "Hello, $name!"
