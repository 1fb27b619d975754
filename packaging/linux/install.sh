#!/bin/sh
# Installs chatapp for you alone, without root:
#   the program        ~/.local/opt/chatapp/          (PREFIX/opt/chatapp)
#   the command        ~/.local/bin/chatapp            (PREFIX/bin, a link to the program)
#   the menu entry     ~/.local/share/applications/chatapp.desktop
#   the icons          ~/.local/share/icons/hicolor/*/apps/chatapp.{png,svg}
# Every file and folder it makes is listed in PREFIX/opt/chatapp/install-manifest.txt;
# uninstall.sh removes exactly those. Run it from the unpacked archive:
#   ./install.sh [--prefix DIR]          (default ~/.local, or $CHATAPP_PREFIX)
# Installing again replaces the earlier install and keeps your conversations.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }

here="$(cd "$(dirname "$0")" && pwd)"
prefix="${CHATAPP_PREFIX:-$HOME/.local}"
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
done
case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac

data_home="${XDG_DATA_HOME:-$HOME/.local/share}"
app_dir="$prefix/opt/chatapp"
bin_dir="$prefix/bin"
apps_dir="$data_home/applications"
icons_dir="$data_home/icons/hicolor"
manifest="$app_dir/install-manifest.txt"

[ -x "$here/chatapp/chatapp" ] || die "no program at $here/chatapp/chatapp: run install.sh from the unpacked archive"
case "$app_dir" in *'"'*|*'`'*|*'$'*|*'\'*) die "the install folder $app_dir has a character a desktop entry cannot hold" ;; esac

# An earlier install by this script is replaced (its uninstall keeps the user's data).
if [ -f "$manifest" ]; then
    echo "replacing the chatapp installed in $app_dir"
    sh "$app_dir/uninstall.sh" --prefix "$prefix" --quiet
elif [ -e "$app_dir" ]; then
    die "$app_dir exists but was not installed by install.sh; move it away first"
fi
if [ -e "$bin_dir/chatapp" ] || [ -L "$bin_dir/chatapp" ]; then
    die "$bin_dir/chatapp already exists (another chatapp, e.g. from pipx?); remove it first"
fi

records="$(mktemp)"
entry_dir="$(mktemp -d)"
trap 'rm -rf "$records" "$entry_dir"' EXIT

# mkdir -p that writes down each folder it creates, parents first
make_dir() {
    missing=""
    dir="$1"
    while [ ! -d "$dir" ]; do
        missing="$dir
$missing"
        dir="$(dirname "$dir")"
    done
    printf '%s' "$missing" | while IFS= read -r dir; do
        [ -n "$dir" ] || continue
        mkdir "$dir"
        echo "dir $dir" >> "$records"
    done
}

put_file() {  # put_file SOURCE TARGET
    make_dir "$(dirname "$2")"
    cp "$1" "$2"
    chmod 644 "$2"
    echo "file $2" >> "$records"
}

# the program
make_dir "$(dirname "$app_dir")"
mkdir "$app_dir"
echo "tree $app_dir" >> "$records"
cp -R "$here/chatapp/." "$app_dir/"
cp "$here/uninstall.sh" "$app_dir/uninstall.sh"
chmod 755 "$app_dir/uninstall.sh"

# the command
make_dir "$bin_dir"
ln -s "$app_dir/chatapp" "$bin_dir/chatapp"
echo "file $bin_dir/chatapp" >> "$records"

# the icons
for png in "$here"/icons/chatapp-*.png; do
    size="${png##*/chatapp-}"
    size="${size%.png}"
    put_file "$png" "$icons_dir/${size}x${size}/apps/chatapp.png"
done
put_file "$here/icons/chatapp.svg" "$icons_dir/scalable/apps/chatapp.svg"

# the menu entry, pointing at the installed program
entry="$entry_dir/chatapp.desktop"
while IFS= read -r line; do
    case "$line" in
        Exec=*) printf 'Exec="%s"\n' "$app_dir/chatapp" ;;
        *) printf '%s\n' "$line" ;;
    esac
done < "$here/chatapp.desktop" > "$entry"
if command -v desktop-file-validate >/dev/null 2>&1; then
    desktop-file-validate "$entry" || echo "install.sh: warning: desktop-file-validate found problems in the menu entry" >&2
fi
put_file "$entry" "$apps_dir/chatapp.desktop"

# Menus and icon themes pick up new files by themselves; refresh caches only where they already exist.
if [ -f "$icons_dir/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache --quiet "$icons_dir" 2>/dev/null || true
fi
if [ -f "$apps_dir/mimeinfo.cache" ] && command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database "$apps_dir" 2>/dev/null || true
fi

echo "file $manifest" >> "$records"
cp "$records" "$manifest"

echo "chatapp is installed in $app_dir"
echo "  command:   $bin_dir/chatapp"
echo "  menu:      $apps_dir/chatapp.desktop (chatapp, under Utilities)"
echo "  uninstall: $app_dir/uninstall.sh  (keeps your conversations; --purge removes them too)"
case ":$PATH:" in
    *":$bin_dir:"*) ;;
    *) echo "note: $bin_dir is not on your PATH; add it, e.g. in ~/.profile:"
       echo "  export PATH=\"$bin_dir:\$PATH\"" ;;
esac
