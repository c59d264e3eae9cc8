# Checks of the environment values a script reads (issue 26), sourced by gpu_run.sh and
# slurm_single_node.sh before either runs anything. A value is data, never code: a number is checked
# as digits before any arithmetic (bash evaluates `$((X))`, `[ X -eq 1 ]` and `(( ))` on an expression,
# so X='a[$(cmd)]' would run cmd), a list of names as words of a safe character set, a path as one that
# no command can read as an option. A bad value is refused with one line on stderr naming the variable,
# its value and what is accepted, and exit 2.

refuse() {  # refuse NAME ACCEPTED: the one line, then exit 2
    local value=${!1}
    echo "${0##*/}: $1='${value//[[:cntrl:]]/?}': accepted: $2" >&2
    exit 2
}

whole() {  # whole NAME LEAST MOST [WORD]: a whole number in [LEAST, MOST] (or WORD), without leading zeros
    local value=${!1}
    if [ -n "${4:-}" ] && [ "$value" = "$4" ]; then return 0; fi
    if ! [[ $value =~ ^[0-9]{1,9}$ ]] || ((10#$value < $2 || 10#$value > $3)); then
        refuse "$1" "${4:+$4 or }a whole number from $2 to $3 (digits only)"
    fi
    printf -v "$1" '%d' "$((10#$value))"
}

words() {  # words NAME REGEX ACCEPTED: one or more words, each matching REGEX
    local word list
    read -r -d '' -a list <<<"${!1}" || true
    [ "${#list[@]}" -gt 0 ] || refuse "$1" "$3"
    for word in "${list[@]}"; do
        [[ $word =~ $2 ]] || refuse "$1" "$3"
    done
}

one_of() {  # one_of NAME CHOICE...: exactly one of the choices
    local name=$1 choice
    shift
    for choice in "$@"; do
        [ "${!name}" = "$choice" ] && return 0
    done
    refuse "$name" "one of: $*"
}

path_value() {  # path_value NAME: a path without control characters, no part of which starts with '-'
    local value=${!1}
    if [ -z "$value" ] || [[ $value == *[[:cntrl:]]* || /$value == */-* ]]; then
        refuse "$1" "a path without control characters, none of whose parts starts with '-'"
    fi
}

# A name of the suite (an arch, a method or variant, a dataset): a letter or digit, then letters,
# digits, '_', '-' or '.'; never a shell or glob character, a space or a leading '-'.
NAME_RE='^[A-Za-z0-9][A-Za-z0-9_.-]*$'
