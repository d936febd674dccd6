# Streams: the first line reaches the client at once, the second 2 s later.
import time

print("first line", flush=True)
time.sleep(2)
print("second line")
