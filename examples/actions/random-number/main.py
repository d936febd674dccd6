# min, max -> a random integer between them (both included).
import json
import random
import sys

data = json.load(sys.stdin)
low, high = sorted((data["min"], data["max"]))
json.dump({"result": random.randint(low, high)}, sys.stdout)
