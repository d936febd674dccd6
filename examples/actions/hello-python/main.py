# An action reads its input, a JSON object, on stdin and writes its output,
# one JSON object, on stdout. stderr is its log.
import json
import sys

data = json.load(sys.stdin)
greeting = data.get("greeting", "Hello")
print(f"greeting {data['name']}", file=sys.stderr)
json.dump({"sentence": f"{greeting}, {data['name']}!"}, sys.stdout)
