# A module of hello.sh: sourced, it only defines a function.
greeting() {
    echo "Hello, $1! (greeting.sh)"
}
