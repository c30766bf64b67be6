#!/usr/bin/env bash
# Install Debian packages the course uses (the Fashion-MNIST files, Chromium for the browser tests, bubblewrap for
# the grader's sandbox)
# where apt is available and permitted; elsewhere say what to do and carry on (exit 0):
# lib.data and the browser tests fall back or skip with their own clear message.
set -u
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: apt-get not found; not installing ${missing[*]} (see README: Data without Debian)." >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""
elif sudo -n true 2>/dev/null; then sudo="sudo -n"
else
  echo "note: not root and no passwordless sudo; to install ${missing[*]} run: sudo apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "Installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/cnn-course-apt.log 2>&1 \
  || { $sudo apt-get update >>/tmp/cnn-course-apt.log 2>&1 && \
       $sudo apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/cnn-course-apt.log 2>&1; } \
  || echo "note: apt-get could not install ${missing[*]} (log: /tmp/cnn-course-apt.log); continuing without." >&2
exit 0
