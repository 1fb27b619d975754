#!/bin/sh
# Removes what install.sh installed, exactly: the files and folders listed in
# PREFIX/opt/chatapp/install-manifest.txt (folders only when they are empty).
# Keeps your conversations, settings and models unless you ask:
#   uninstall.sh [--prefix DIR] [--purge] [--quiet]
#     --prefix DIR  where install.sh installed (default ~/.local, or $CHATAPP_PREFIX)
#     --purge       also delete your data: ~/.local/share/chatapp, ~/.config/chatapp
#                   (works after a plain uninstall too: then it deletes only the data)
# The cache (~/.cache/chatapp: saved prompt states, rebuilt when needed) always goes.
set -eu

die() { echo "uninstall.sh: $*" >&2; exit 1; }

prefix="${CHATAPP_PREFIX:-$HOME/.local}"
purge=0
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --purge) purge=1; shift ;;
        --quiet) quiet=1; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac

app_dir="$prefix/opt/chatapp"
manifest="$app_dir/install-manifest.txt"
data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/chatapp"
config_dir="${XDG_CONFIG_HOME:-$HOME/.config}/chatapp"
cache_dir="${XDG_CACHE_HOME:-$HOME/.cache}/chatapp"

if [ ! -f "$manifest" ]; then
    # nothing installed (any more): --purge still deletes what a plain uninstall kept
    [ "$purge" = 1 ] || die "no chatapp installed by install.sh under $prefix (no $manifest)"
    rm -rf "$data_dir" "$config_dir" "$cache_dir"
    [ "$quiet" = 1 ] || echo "no chatapp installed under $prefix; its data ($data_dir, $config_dir) is deleted"
    exit 0
fi

records="$(mktemp)"
trap 'rm -f "$records"' EXIT
cp "$manifest" "$records"

# files and links first, then the program folder, then the folders install.sh made, deepest first
while IFS= read -r line; do
    case "$line" in
        "file "*) rm -f "${line#file }" ;;
    esac
done < "$records"
while IFS= read -r line; do
    case "$line" in
        "tree "*)
            tree="${line#tree }"
            [ "$tree" = "$app_dir" ] || die "the manifest names $tree, not $app_dir; stopping"
            rm -rf "$tree" ;;
    esac
done < "$records"
grep '^dir ' "$records" | sed -n '1!G;h;$p' | while IFS= read -r line; do
    rmdir "${line#dir }" 2>/dev/null || true  # kept when something else lives there
done

rm -rf "$cache_dir"
if [ "$purge" = 1 ]; then
    rm -rf "$data_dir" "$config_dir"
    [ "$quiet" = 1 ] || echo "chatapp is uninstalled, and its data ($data_dir, $config_dir) deleted"
else
    [ "$quiet" = 1 ] || echo "chatapp is uninstalled"
    kept=""
    for dir in "$data_dir" "$config_dir"; do
        if [ -e "$dir" ]; then
            kept="$kept \"$dir\""
            [ "$quiet" = 1 ] || echo "  kept $dir (your conversations, settings and models)"
        fi
    done
    # this script has just removed itself: say how to delete the data later
    if [ -n "$kept" ] && [ "$quiet" = 0 ]; then
        echo "  to delete them later: rm -rf$kept  (or the archive's ./uninstall.sh --purge)"
    fi
fi
if [ -n "${CHATAPP_HOME:-}" ] && [ "$quiet" = 0 ]; then
    echo "  CHATAPP_HOME=$CHATAPP_HOME is left as it is"
fi
