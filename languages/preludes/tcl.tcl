# stack prelude for Tcl: tclsh tcl.tcl SCRIPT ?ARG ...?
#
# Reads $STACK_HOOK_FLAT (name\0value\0 pairs) into globals (Hook_params_name,
# ...) and the arrays Hook_params, Hook_req, Hook_env (keys without the
# prefix: $Hook_params(name)), with set, never eval. Defines stack_status and
# stack_header (fd 3 control messages), then sources SCRIPT at the global
# level with argv0, argv and argc describing it, and its folder on auto_path.
#
# Tcl cannot adopt an inherited descriptor, so fd 3 is reopened through
# /dev/fd/3: that needs /dev/fd and a pipe or file (not a socket) at fd 3.

namespace eval ::stack {
    variable control ""
    # Before anything else opens a file: without an inherited fd 3 (a script
    # run by hand) control messages are dropped.
    # APPEND for a file (3>log), plain WRONLY for a pipe, which cannot seek.
    if {![catch {open /dev/fd/3 {WRONLY APPEND}} channel]
        || ![catch {open /dev/fd/3 WRONLY} channel]} {
        set control $channel
        fconfigure $control -buffering full -translation lf
    }
}

fconfigure stdout -buffering none

proc ::stack::load {path} {
    array set ::Hook_params {}
    array set ::Hook_req {}
    array set ::Hook_env {}
    if {$path eq ""} return
    set in [open $path r]
    # The system encoding, as stdout and the script: bytes pass through.
    fconfigure $in -translation lf
    set fields [split [read $in] \0]
    close $in
    foreach {name value} [lrange $fields 0 end-1] {
        # Only Hook_* names: no array syntax, no clobbering of env or argv.
        if {![regexp {^Hook_[A-Za-z0-9_]*$} $name]} continue
        catch {set ::$name $value}
        if {[regexp {^Hook_(params|req|env)_(.+)$} $name -> section key]} {
            set ::Hook_${section}($key) $value
        }
    }
}

if {[info exists env(STACK_HOOK_FLAT)]} {
    ::stack::load $env(STACK_HOOK_FLAT)
} else {
    ::stack::load ""
}

proc ::stack::json {s} {
    set s [string map {\\ \\\\ \" \\\" \n \\n \r \\r \t \\t} $s]
    foreach c [lsort -unique [regexp -all -inline {[\x00-\x1f\x7f]} $s]] {
        set s [string map [list $c [format \\u%04x [scan $c %c]]] $s]
    }
    return "\"$s\""
}

proc ::stack::send {line} {
    variable control
    if {$control eq ""} return
    flush stdout ;# control and body stay in program order
    if {[catch {puts -nonewline $control "$line\n"; flush $control}]} {
        catch {close $control}
        set control ""
    }
}

# stack_status CODE: set the response status.
proc stack_status {code} {
    if {![regexp {^[0-9]+$} $code]} {
        error "stack_status: not a status code: $code"
    }
    ::stack::send "{\"type\":\"statusCode\",\"payload\":{\"value\":[scan $code %d]}}"
}

# stack_header NAME VALUE: set a response header.
proc stack_header {name value} {
    set n [::stack::json $name]
    set v [::stack::json $value]
    ::stack::send "{\"type\":\"setHeader\",\"payload\":{\"name\":$n,\"value\":$v}}"
}

if {$argc < 1} {
    puts stderr "usage: tclsh tcl.tcl SCRIPT ?ARG ...?"
    exit 2
}
set argv0 [lindex $argv 0]
# The script's folder is its code: [info script] names it, and package
# require looks there too (pkgIndex.tcl).
lappend auto_path [file dirname [file normalize $argv0]]
set argv [lrange $argv 1 end]
set argc [llength $argv]
source $argv0
