# ruff: noqa: F821 (Hook is a global the stack prelude defines)
# Lists the uploaded files (multipart/form-data): an uploaded file's
# parameter is {"filename", "path", "size", "contentType"}.
import os

files = {
    name: value
    for name, value in Hook["params"].items()
    if isinstance(value, dict) and "path" in value
}
if not files:
    print("no files uploaded")
for name, upload in sorted(files.items()):
    size = upload["size"] if "size" in upload else os.path.getsize(upload["path"])
    print(f"{name}: {upload.get('filename')} ({size} bytes, {upload.get('contentType')})")
