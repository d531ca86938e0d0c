"""Make the shipped demo recording: held-out (test-split) TTS voices over real kitchen noise.

    python recipes/demo_audio.py

"Alexa, what time is it?" (MBROLA us3) and "Hey Samuel, tell me a joke." (flite kal16), both
test-split voices that no model trains on, over Speech Commands' "doing the dishes" noise
(CC BY 4.0) at ~20 dB SNR. Written to src/polywake/assets/examples/alexa_hey_samuel.flac.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polywake.audio import load_audio, write_audio
from polywake.data import splits, tts

OUT = Path("src/polywake/assets/examples/alexa_hey_samuel.flac")


def main() -> None:
    voices = {v.voice_id: v for v in tts.list_voices()}
    a = tts.synthesize("Alexa, what time is it?", voices["mbrola:mb-us3"])
    b = tts.synthesize("Hey Samuel, tell me a joke.", voices["flite:kal16"])
    for v in ("mbrola:mb-us3", "flite:kal16"):
        assert splits.split_of_key(voices[v].speaker) == "test", v
    gap = np.zeros(int(1.5 * 16000), np.float32)
    speech = np.concatenate([gap, a / np.abs(a).max() * 0.5, gap, b / np.abs(b).max() * 0.5, gap])
    noise = load_audio(splits.shared_data_dir() / "noise/speech_commands/doing_the_dishes.flac")
    noise = noise[16000 * 5: 16000 * 5 + speech.size]
    rms = lambda x: np.sqrt(np.mean(x ** 2))  # noqa: E731
    mix = speech + noise * (rms(speech[np.abs(speech) > 1e-3]) / rms(noise) / 10)
    write_audio(OUT, np.clip(mix, -1, 1).astype(np.float32))
    print(f"wrote {OUT} ({mix.size / 16000:.1f} s)")


if __name__ == "__main__":
    main()
