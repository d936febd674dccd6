# bash: $0 is this script, wherever it is staged.
source "$(dirname "$0")/greeting.sh"
greeting "${Hook_params_name:-world}"
