# stack prelude for POSIX sh (dash): sh sh.sh SCRIPT [ARGS...]
#
# dash cannot read the NUL-separated $STACK_HOOK_FLAT, so the language sets
# hook_env and the engine exports the Hook_* variables itself: nothing to
# parse here. Defines stack_status and stack_header (fd 3 control messages),
# then runs SCRIPT in this shell with ".". $0 stays this prelude (dash cannot
# change it).

# Probe fd 3 before anything else opens a file: without it (a script run by
# hand) control messages are dropped.
if { true >&3; } 2>/dev/null; then __stack_ctl=1; else __stack_ctl=0; fi

# __stack_json STRING: set __stack_j to STRING as a JSON string literal.
__stack_json() {
    __stack_j=$1
    case $__stack_j in
    *[\\\"]* | *[[:cntrl:]]*)
        # Rare (quotes, backslashes, control characters): escape byte by byte.
        set -- "$1" ""
        while [ -n "$1" ]; do
            __stack_c=${1%"${1#?}"}
            case $__stack_c in
            \\) set -- "${1#?}" "$2\\\\" ;;
            \") set -- "${1#?}" "$2\\\"" ;;
            [[:cntrl:]]) set -- "${1#?}" "$2$(printf '\\u%04x' "'$__stack_c")" ;;
            *) set -- "${1#?}" "$2$__stack_c" ;;
            esac
        done
        __stack_j=$2
        ;;
    esac
    __stack_j="\"$__stack_j\""
}

__stack_send() {
    [ "$__stack_ctl" = 1 ] && printf '%s\n' "$1" >&3
    return 0
}

# stack_status CODE: set the response status.
stack_status() {
    case $1 in
    '' | *[!0-9]*)
        printf 'stack_status: not a status code: %s\n' "$1" >&2
        return 2
        ;;
    esac
    __stack_c=${1#"${1%%[!0]*}"} # no leading zeros: JSON has no octal
    __stack_send "{\"type\":\"statusCode\",\"payload\":{\"value\":${__stack_c:-0}}}"
}

# stack_header NAME VALUE: set a response header.
stack_header() {
    __stack_json "$1"
    __stack_n=$__stack_j
    __stack_json "$2"
    __stack_send "{\"type\":\"setHeader\",\"payload\":{\"name\":$__stack_n,\"value\":$__stack_j}}"
}

__stack_script=${1:?usage: sh sh.sh SCRIPT [ARGS...]}
shift
case $__stack_script in */*) ;; *) __stack_script=./$__stack_script ;; esac
. "$__stack_script"
