#!/usr/bin/env bash
# System packages: TTS engines (synthetic data), PortAudio (microphone), sox.
# Installs with apt when root; otherwise says what is missing and carries on
# (the engines that are absent are skipped at synthesis time). Safe to run again.
#
# MBROLA voices, svox pico and the festvox us1/us2/us3/en1 voices live in Debian's contrib /
# non-free components; as root this script adds those components to the Debian sources first
# (deb822 /etc/apt/sources.list.d/debian.sources or one-line /etc/apt/sources.list).
set -u
MAIN_PKGS="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libportaudio2 libsndfile1"
NONFREE_PKGS="mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils festvox-us1 festvox-us2 festvox-us3 festvox-en1"

missing_of() {
  local out=""
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || out="$out $p"
  done
  echo "$out"
}

missing="$(missing_of $MAIN_PKGS $NONFREE_PKGS)"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "note: not root (or no apt); missing system packages:$missing"
  echo "      (TTS engines that are absent are skipped; microphone needs libportaudio2)"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# Add contrib + non-free to Debian's own sources (idempotent: only lines that lack them).
changed=0
if [ -f /etc/apt/sources.list.d/debian.sources ] && \
   grep -qE '^Components: main$' /etc/apt/sources.list.d/debian.sources; then
  sed -i 's/^Components: main$/Components: main contrib non-free/' \
    /etc/apt/sources.list.d/debian.sources && changed=1
fi
if [ -f /etc/apt/sources.list ] && \
   grep -qE '^deb .*debian.* main$' /etc/apt/sources.list; then
  sed -i -E 's/^(deb .*debian.* main)$/\1 contrib non-free/' /etc/apt/sources.list && changed=1
fi
[ "$changed" = "1" ] && echo "added contrib non-free to the Debian apt sources"

apt-get update -qq >/dev/null 2>&1 || echo "warning: apt-get update failed (continuing)"

main_missing="$(missing_of $MAIN_PKGS)"
if [ -n "$main_missing" ]; then
  echo "installing system packages:$main_missing"
  apt-get install -y -qq --no-install-recommends $main_missing >/dev/null \
    || echo "warning: apt-get failed for:$main_missing (continuing)"
fi
# One at a time: a non-free package that is unavailable must not block the others.
for p in $(missing_of $NONFREE_PKGS); do
  apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
    && echo "installed $p" || echo "note: $p not installable here (skipped)"
done
exit 0
