# An action reads its input, a JSON object, on stdin and writes its output,
# one JSON object, on stdout. stderr is its log. jq does the JSON.
echo "greeting someone" >&2
jq -c '{sentence: "\(.greeting // "Hello"), \(.name)!"}'
