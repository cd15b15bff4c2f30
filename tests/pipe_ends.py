"""The programs at either end of a pipe in the pipe tests, run as processes of their own:

python pipe_ends.py produce SOURCE FORMAT      SOURCE remuxed (every stream copied) to stdout
python pipe_ends.py consume REPORT             stdout's stream read with PyAV: REPORT.json, REPORT.npy
python pipe_ends.py close-after BYTES          reads BYTES of stdin, then exits (closing the pipe)
"""

from __future__ import annotations

import hashlib
import json
import sys

import av
import numpy as np


def produce(source: str, fmt: str) -> None:
    with av.open(source) as container, av.open("pipe:1", "w", format=fmt) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in container.streams}
        for packet in container.demux():
            if packet.dts is None and packet.size == 0:  # the demuxer's flush packet
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def consume(report: str) -> None:
    """Every video frame as RGB (in REPORT.npy) with its time; every other packet's stream type,
    time and bytes' hash (in REPORT.json)."""
    frames, facts = [], {"video_times": [], "packets": []}
    with av.open("pipe:0") as container:
        facts["format"] = container.format.name
        facts["streams"] = [s.type for s in container.streams]
        video = container.streams.video[0]
        for packet in container.demux():
            if packet.stream.index != video.index:
                if packet.size:
                    digest = hashlib.sha256(payload(packet)).hexdigest()
                    time = round(float(packet.pts * packet.time_base), 6)
                    facts["packets"].append([packet.stream.type, time, digest])
                continue
            for frame in packet.decode():
                frames.append(frame.to_ndarray(format="rgb24"))
                facts["video_times"].append(round(float(frame.pts * frame.time_base), 6))
    np.save(report + ".npy", np.stack(frames))
    with open(report + ".json", "w") as file:
        json.dump(facts, file)


def payload(packet: av.Packet) -> bytes:
    """A packet's bytes, an AAC frame without its ADTS header (which MPEG-TS adds: ISO/IEC
    13818-7, 6.2: 7 bytes, 9 with a CRC)."""
    data = bytes(packet)
    if packet.stream.codec_context.name == "aac" and len(data) > 7 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return data[7 if data[1] & 1 else 9 :]
    return data


def close_after(count: int) -> None:
    sys.stdin.buffer.read(count)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"produce": produce, "consume": consume, "close-after": lambda n: close_after(int(n))}[command](*args)
