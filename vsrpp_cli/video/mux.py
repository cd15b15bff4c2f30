"""Muxing: the segments' video packets joined into one file without re-encoding, with the
input's audio and subtitles copied beside them, interleaved by time (an audio codec the container
cannot hold transcoded, AAC for MP4/MOV and Opus for WebM; a subtitle stream it cannot hold left
out, each with a notice)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.logging

from .encode import EncoderSettings, add_video_stream
from .info import VideoInfo
from .live import LiveSource

# What each container can hold without transcoding (None: anything FFmpeg can mux there).
AUDIO_OK = {
    "mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    "mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le", "pcm_s16be", "pcm_s24be"},
    "webm": {"opus", "vorbis"},
    "matroska": None,
    "nut": None,
    "mpegts": {"aac", "mp3", "mp2", "ac3", "eac3", "opus"},
    "yuv4mpegpipe": set(),  # video only
}



AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "webm": "libopus", "mpegts": "aac"}



SUBTITLES_OK = {"mp4": {"mov_text"}, "mov": {"mov_text"}, "webm": {"webvtt"}, "matroska": None, "nut": set(),
                "mpegts": {"dvb_subtitle"}, "yuv4mpegpipe": set()}  # fmt: skip



@dataclass(frozen=True)
class StoredPacket:
    """A compressed video packet's facts, kept with a segment (its bytes are stored apart)."""

    pts: int
    duration: int
    keyframe: bool
    size: int



class Muxer:
    """The final file: the segments' video packets as they are (no re-encoding), the input's
    audio and subtitles interleaved by time, the container's metadata and display rotation."""

    def __init__(
        self,
        path: Path | str,  # a file, or FFmpeg's "pipe:N" for an open file descriptor
        settings: EncoderSettings,
        info: VideoInfo,
        size: tuple[int, int],
        source: Path | LiveSource | None,  # where audio and subtitles come from
        notice: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.info = info
        fmt = settings.container_format
        options = {
            # Matroska would otherwise shift every stream so that AAC priming (negative audio
            # timestamps copied from MP4) starts at zero, moving the video's timestamps with it.
            "matroska": {"avoid_negative_ts": "disabled"},
            "webm": {"avoid_negative_ts": "disabled"},
            # Deeper than 8 bits is an extension of the format that FFmpeg writes only when told.
            "yuv4mpegpipe": {"strict": "-1"},
        }.get(fmt, {})
        if fmt in ("matroska", "webm"):  # else a random SegmentUID (and CRCs): the same run, other bytes
            options = {**options, "fflags": "+bitexact"}
        # The output's timeline starts at 0 (a capture's does at 1.4 s, shown as blank lead-in by
        # players): every stream moved back by the input's start, their offsets kept.
        self.shift = round(info.start / info.time_base)
        self.video_end = 0.0  # seconds of the input's timeline the video written so far reaches
        self.container = av.open(str(path), "w", format=fmt, options=options)
        self.passthrough = None
        try:
            self.stream = add_video_stream(self.container, settings, info, size, notice)
            if info.rotation:
                self.stream.set_display_rotation(info.rotation)
            self.container.metadata.update(info.container_metadata)
            self.passthrough = (Passthrough(source, self.container, fmt, notice, info.start)
                                if source is not None else None)  # fmt: skip
            # Opens the (unused) encoder for its headers, which match every segment's, and writes
            # the file's header.
            self.container.start_encoding()
        except BaseException:
            self.abort()
            raise

    def mux(self, segments: list[tuple[list[StoredPacket], Callable[[], Iterator[bytes]]]]) -> None:
        """Every video packet of the output, segment by segment in decode order: each segment's
        packet facts and a reader of its payloads (only one segment's data is in memory at a
        time). Decode timestamps are made anew for the whole stream: each segment's encoder
        guessed its own for its first packets, which would run backwards where two segments
        meet (see `decode_timestamps`)."""
        facts = [packet for packets, _ in segments for packet in packets]
        dts_all = iter(decode_timestamps([p.pts for p in facts]))
        for packets, payloads in segments:
            for packet, data in zip(packets, payloads(), strict=True):
                dts = next(dts_all)
                out = av.Packet(data)
                out.pts, out.dts, out.duration = packet.pts - self.shift, dts - self.shift, packet.duration
                out.is_keyframe = packet.keyframe
                out.time_base = self.info.time_base
                out.stream = self.stream
                if self.passthrough:
                    self.passthrough.mux_until(float(dts * self.info.time_base))
                self.container.mux(out)

    def write(self, packets: list[av.Packet]) -> None:
        """Packets of one encoder for the whole output (a live run), as they come: the audio
        and subtitles up to each packet's time go in before it."""
        for packet in packets:
            out = av.Packet(bytes(packet))
            out.pts, out.dts, out.duration = packet.pts - self.shift, packet.dts - self.shift, packet.duration
            self.video_end = max(self.video_end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
            out.is_keyframe = packet.is_keyframe
            out.time_base = packet.time_base
            out.stream = self.stream
            if self.passthrough and packet.dts is not None:
                self.passthrough.mux_until(float(packet.dts * packet.time_base))
            self.container.mux(out)

    def close(self, until: float | None = None) -> None:
        """The rest of the audio and subtitles (up to `until` seconds of the input, where given),
        then the container's end."""
        if self.passthrough:
            self.passthrough.mux_until(float("inf") if until is None else until)
            self.passthrough.close()
        self.container.close()

    def abort(self) -> None:
        try:
            if self.passthrough:
                self.passthrough.close()
            self.container.close()
        except Exception:  # the file is deleted next: a failing close must not hide the first error
            pass



def decode_timestamps(pts: list[int]) -> list[int]:
    """Decode timestamps for packets in decode order: the i-th is the (i - D)-th smallest
    presentation timestamp, D being the deepest reordering in the stream (what muxers do for an
    encoder with B-frames: FFmpeg's libavformat/mux.c, compute_muxer_pkt_fields). The first D
    run below the first frame, one frame interval apart."""
    order = sorted(pts)
    rank = {value: index for index, value in enumerate(order)}
    delay = max((index - rank[value] for index, value in enumerate(pts)), default=0)
    step = min((b - a for a, b in itertools.pairwise(order)), default=1) or 1
    return [order[i - delay] if i >= delay else order[0] - (delay - i) * step for i in range(len(pts))]



class Passthrough:
    """Copies the input's audio and subtitle streams into the output, packet by packet: from a
    file of its own opening, or from a live source's packets as they were read (`side`)."""

    def __init__(
        self, source: Path | LiveSource, output: av.container.OutputContainer, fmt: str,
        notice: Callable[[str], None], start: Fraction = Fraction(0),
    ) -> None:  # fmt: skip
        self.start = start  # seconds every stream is moved back by (Muxer.shift)
        self.input = av.open(str(source)) if isinstance(source, Path) else None
        streams = list(self.input.streams) if self.input is not None else source.streams
        self.output_streams: dict[int, av.stream.Stream] = {}
        self.transcoders: dict[int, av.audio.stream.AudioStream] = {}
        wanted = []
        for stream in streams:
            name = stream.codec_context.name if stream.codec_context else "unknown"
            if stream.type == "audio":
                allowed = AUDIO_OK[fmt]
                if allowed is None or name in allowed:
                    self.output_streams[stream.index] = output.add_stream_from_template(stream)
                    config = adts_config(stream) if name == "aac" and not stream.codec_context.extradata else None
                    if config is not None:
                        self.output_streams[stream.index].codec_context.extradata = config
                elif fmt not in AUDIO_FALLBACK:
                    notice(f"audio stream {stream.index} ({name}): {fmt} holds video only, so it is left out")
                    continue
                else:
                    target = AUDIO_FALLBACK[fmt]
                    notice(
                        f"audio stream {stream.index} ({name}) cannot go into {fmt} as it is: transcoded to {target}"
                    )
                    out = output.add_stream(target, rate=stream.rate)
                    out.layout = stream.layout
                    self.output_streams[stream.index] = out
                    self.transcoders[stream.index] = out
                wanted.append(stream)
            elif stream.type == "subtitle":
                allowed = SUBTITLES_OK[fmt]
                if allowed is None or name in allowed:
                    self.output_streams[stream.index] = output.add_stream_from_template(stream)
                    wanted.append(stream)
                else:
                    notice(
                        f"subtitle stream {stream.index} ({name}) cannot go into {fmt}: left out (use .mkv to keep it)"
                    )
        for stream in streams:
            if stream.index in self.output_streams:
                self.output_streams[stream.index].metadata.update(stream.metadata)
        if self.input is not None:
            self.packets: Iterator[av.Packet] = self.input.demux(wanted) if wanted else iter(())
        else:
            self.packets = Drain(source.side, set(self.output_streams))
        self.pending: av.Packet | None = None
        self.output = output

    def mux_until(self, seconds: float) -> None:
        while True:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                return
            if packet.dts is None and packet.size == 0:  # demuxer flush packet
                continue
            when = packet.dts if packet.dts is not None else packet.pts
            if when is not None and float(when * packet.time_base) > seconds:
                self.pending = packet
                return
            self._mux(packet)

    def _mux(self, packet: av.Packet) -> None:
        index = packet.stream.index
        out = self.output_streams[index]
        if index in self.transcoders:
            for frame in packet.decode():
                if frame.pts is not None:
                    frame.pts -= round(self.start / frame.time_base)
                self.output.mux(out.encode(frame))
            return
        shift = round(self.start / packet.time_base)
        if packet.pts is not None:
            packet.pts -= shift
        if packet.dts is not None:
            packet.dts -= shift
        packet.stream = out
        self.output.mux(packet)

    def close(self) -> None:
        for out in self.transcoders.values():
            self.output.mux(out.encode())
        self.transcoders.clear()
        if self.input is not None:
            self.input.close()



def adts_config(stream: av.audio.stream.AudioStream) -> bytes | None:
    """The AudioSpecificConfig (ISO/IEC 14496-3, 1.6.2.1) of an AAC stream in ADTS form (MPEG-TS,
    raw .aac), which carries none: Matroska written to a pipe needs it in its header, before the
    first packet from which FFmpeg's aac_adtstoasc filter would take it. None where the stream's
    parameters do not give it (a rate off the table, channels from a program config element)."""
    ctx = stream.codec_context
    if ctx.sample_rate not in AAC_RATES or not 0 < ctx.channels < 8:
        return None
    object_type = AAC_OBJECT_TYPES.get(ctx.profile or "LC", 2)  # HE-AAC travels in ADTS as LC
    config = object_type << 11 | AAC_RATES.index(ctx.sample_rate) << 7 | ctx.channels << 3
    return config.to_bytes(2, "big")



class Drain:
    """The packets waiting in a live source's queue, of the streams kept: an iterator that runs
    dry when the queue is empty now and yields again once the source has read more."""

    def __init__(self, queue: deque[av.Packet], streams: set[int]) -> None:
        self.queue, self.streams = queue, streams

    def __iter__(self) -> Drain:
        return self

    def __next__(self) -> av.Packet:
        while self.queue:
            packet = self.queue.popleft()
            if packet.stream.index in self.streams:
                return packet
        raise StopIteration


AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)



AAC_OBJECT_TYPES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4}  # an ADTS header holds only these
