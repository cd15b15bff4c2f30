"""Video in and out: which source a path is (inputs.py) and what it holds (info.py), decoding
(decode.py; live.py for what is read once; images.py for frame folders), colour on the device
(colour.py), frames to tensors and back (tensors.py), shots (shots.py), encoding (encode.py) and
joining with the audio and subtitles (mux.py)."""
