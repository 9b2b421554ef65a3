#!/usr/bin/env bash
# Checks scripts/new-app end to end on a copy of the source tree: bad names
# are refused, `scripts/new-app demo` makes apps/demo with no trace of
# "skeleton" left, and a fresh build dir builds apps/demo/demo and passes the
# copied tests (suite demo). Only the demo app and the library are compiled
# (buildtype plain: no optimisation, no debug info, to keep it cheap).
#   new_app_test.sh SOURCE_ROOT
set -euo pipefail
src=$(cd "${1:?usage: new_app_test.sh SOURCE_ROOT}" && pwd)
jobs=${NEW_APP_TEST_JOBS:-2}

work=$(mktemp -d /tmp/percore-new-app.XXXXXX)
trap 'rm -rf "$work"' EXIT
tree=$work/src

# The sources as a checkout would have them: tracked plus untracked, not
# ignored, files (so no build dirs); a plain copy without build* otherwise.
mkdir -p "$tree"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
    tar --null -T - -cf -) | tar -C "$tree" -xf -
else
  (cd "$src" && tar --exclude='./build*' -cf - .) | tar -C "$tree" -xf -
fi
cd "$tree"
[[ -d apps/skeleton ]] || { echo "FAIL: apps/skeleton missing from the copy" >&2; exit 1; }

fail() { echo "FAIL: $*" >&2; exit 1; }

# Bad names: exit 2 and no change to the tree.
before=$(cat apps/meson.build)
for bad in Demo 1demo demo-x "" skeleton echo "demo x"; do
  if out=$(scripts/new-app "$bad" 2>&1); then fail "new-app accepted '$bad': $out"; fi
  [[ $out == new-app:* ]] || fail "no clear message for '$bad': $out"
done
[[ $(cat apps/meson.build) == "$before" ]] || fail "a refused name changed apps/meson.build"
[[ ! -e apps/Demo && ! -e apps/1demo ]] || fail "a refused name created a directory"

scripts/new-app demo
[[ -f apps/demo/main.cpp && -f apps/demo/meson.build ]] || fail "apps/demo incomplete: $(ls apps/demo)"
if grep -rniI skeleton apps/demo; then fail "apps/demo still mentions skeleton (above)"; fi
[[ -z $(find apps/demo -iname '*skeleton*') ]] || fail "a file name still says skeleton"
grep -qx "subdir('demo')" apps/meson.build || fail "apps/demo not registered in apps/meson.build"
if scripts/new-app demo 2>/dev/null; then fail "new-app demo ran twice"; fi

meson setup "$work/build" --buildtype=plain -Dwerror=true -Dtests=disabled \
  -Dbenchmarks=disabled >"$work/setup.log" 2>&1 || { cat "$work/setup.log"; fail "meson setup"; }
ninja -C "$work/build" -j"$jobs" apps/demo/demo >"$work/build.log" 2>&1 ||
  { tail -50 "$work/build.log"; fail "building apps/demo/demo"; }
meson test -C "$work/build" --no-rebuild --print-errorlogs --suite demo
tests=$(meson test -C "$work/build" --no-rebuild --suite demo --list 2>/dev/null | grep -c demo || true)
[[ $tests -ge 1 ]] || fail "suite demo has no test"
echo "ok: scripts/new-app demo builds and passes its $tests test(s)"
