# stack prelude for bash: bash bash.bash SCRIPT [ARGS...]
#
# Sets the Hook_* variables: from the environment when the engine put them all
# there (STACK_HOOK_ENV=1, the usual case: bash imports them itself), else
# from $STACK_HOOK_FLAT (name\0value\0 pairs) with printf -v, never eval, so
# request data stays data. Defines stack_status and
# stack_header (fd 3 control messages), then sources SCRIPT in this shell.

# Probe fd 3 before anything else opens a file: without it (a script run by
# hand) control messages are dropped.
if { true >&3; } 2>/dev/null; then __stack_ctl=1; else __stack_ctl=0; fi

if [[ ${STACK_HOOK_ENV-} == 1 ]]; then
    # The engine exported every Hook_* variable (they fit in the environment):
    # keep them as shell variables only, as if read from the file, so that the
    # script's child processes do not inherit request data.
    __stack_k=("${!Hook_@}")
    ((${#__stack_k[@]})) && export -n "${__stack_k[@]}"
    unset STACK_HOOK_ENV __stack_k
elif [[ -n ${STACK_HOOK_FLAT-} ]]; then
    while IFS= read -r -d '' __stack_k && IFS= read -r -d '' __stack_v; do
        # Only Hook_* names: a crafted name can neither run code nor replace PATH.
        # (A pattern, not a regex: bash compiles a regex on every test.)
        [[ $__stack_k == Hook_* && $__stack_k != *[!A-Za-z0-9_]* ]] &&
            printf -v "$__stack_k" '%s' "$__stack_v"
    done <"$STACK_HOOK_FLAT"
    unset __stack_k __stack_v
fi

# __stack_json VAR STRING: store STRING as a JSON string literal in VAR.
__stack_json() {
    local s=$2 out= c
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    if [[ $s == *[[:cntrl:]]* ]]; then
        s=${s//$'\n'/\\n}
        s=${s//$'\r'/\\r}
        s=${s//$'\t'/\\t}
        while [[ $s =~ ^([^[:cntrl:]]*)([[:cntrl:]])(.*)$ ]]; do
            printf -v c '\\u%04x' "'${BASH_REMATCH[2]}"
            out+=${BASH_REMATCH[1]}$c
            s=${BASH_REMATCH[3]}
        done
        s=$out$s
    fi
    printf -v "$1" '"%s"' "$s"
}

__stack_send() {
    ((__stack_ctl)) && printf '%s\n' "$1" >&3
    return 0
}

# stack_status CODE: set the response status.
stack_status() {
    if [[ ! $1 =~ ^[0-9]+$ ]]; then
        printf 'stack_status: not a status code: %s\n' "$1" >&2
        return 2
    fi
    __stack_send "{\"type\":\"statusCode\",\"payload\":{\"value\":$((10#$1))}}"
}

# stack_header NAME VALUE: set a response header.
stack_header() {
    local name value
    __stack_json name "$1"
    __stack_json value "$2"
    __stack_send "{\"type\":\"setHeader\",\"payload\":{\"name\":$name,\"value\":$value}}"
}

__stack_script=${1:?usage: bash.bash SCRIPT [ARGS...]}
shift
[[ $__stack_script == */* ]] || __stack_script=./$__stack_script
BASH_ARGV0=$__stack_script # $0 is the script, as when bash runs it directly
source "$__stack_script"
