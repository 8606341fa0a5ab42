# Sourced by the scripts: run a command as root whether or not this shell is root.
# As root: as is. Otherwise through sudo when it exists. Otherwise say what is needed.

# as_root WHY CMD...: run CMD as root; WHY says what needs root, for the message.
as_root() {
    local why=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        echo "error: root is needed for $why, and this user is neither root nor has sudo." >&2
        echo "Run this script as root (e.g. in a root shell: ./${0#./}), or install sudo." >&2
        exit 1
    fi
}

# need_root WHY: stop early, with the message above, when nothing can give us root.
need_root() {
    if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
        as_root "$1" true
    fi
}
