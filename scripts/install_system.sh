#!/usr/bin/env bash
# System packages: TTS engines (synthetic data), PortAudio (microphone), sox.
# Installs with apt when root; otherwise says what is missing and carries on
# (the engines that are absent are skipped at synthesis time).
set -u
PKGS="espeak-ng flite libportaudio2 libsndfile1"
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing system packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends $missing >/dev/null || echo "warning: apt-get failed for:$missing (continuing)"
else
  echo "note: not root; missing system packages:$missing (TTS engines/microphone will be skipped)"
fi
exit 0
