#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ (run from anywhere: python3 fuzz/make_seeds.py).

Each seed spells out, byte by byte, the choices a target decodes (the order is the order of the reads in the target's
source; 0 is always the plain choice, and reads past the end return 0). The seeds are a starting point only: the
fuzzer mutates them, and a change to a target's decoding merely makes them start somewhere else.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u16(v):
    return struct.pack('<H', v)


def u64(v):
    return struct.pack('<Q', v)


def view(layout=0, pads=(), edits=(), empty_choice=None):
    """make_view: a layout byte (bit 3: padding bytes follow), then hostile edits (each 0xf0 + its bytes), then
    0 to end the edits; an empty view reads one more byte (0 NULL, 1 a 0-byte block, 2 a dangling pointer)."""
    b = bytes([layout]) + (bytes(pads) if layout & 8 else b'')
    for e in edits:
        b += bytes([0xf0]) + bytes(e)
    b += b'\x00' if len(edits) < 2 else b''
    if empty_choice is not None:
        b += bytes([empty_choice])
    return b


def dim(d):
    """fuzz_attention's dim_from: bytes < 128 give 32, 64, 96, 128; bytes >= 128 give 1 + (b - 128)."""
    return (d // 32 - 1) if d % 32 == 0 and d <= 128 else 128 + d - 1


def attention(mode=0, types=(0, 0, 0), D=64, DV=64, n_q=4, n_head_kv=2, heads_per_kv=2, n_seq_kv=1, seqs_per_kv=1,
              n_kv=300, mask=False, sinks=False, q_pos=False, kv_pos=False, library_init=True, seed=1,
              scale=0, max_bias=0, softcap=0, virtual_mask=0, window=0, q_pos0=0, kv_pos0=0, threads=1, isa=0,
              params_edit=(), views=None, segments=(), nth=1, ith=0, recheck=3):
    features = int(mask) | int(sinks) << 1 | int(q_pos) << 2 | int(kv_pos) << 3 | int(library_init) << 4
    b = bytes([mode, *types, dim(D), dim(DV), n_q - 1, n_head_kv - 1, heads_per_kv - 1, n_seq_kv - 1,
               seqs_per_kv - 1]) + u16(n_kv) + bytes([features]) + u64(seed)
    b += bytes([scale, max_bias, softcap, virtual_mask, window, q_pos0, kv_pos0, threads - 1, isa])
    b += bytes([0xf0, *params_edit]) if params_edit else b'\x00'  # a rare parameter edit: case, value
    views = views or {}
    empty = None if n_kv else 1
    b += views.get('q', view()) + views.get('k', view(empty_choice=empty)) + views.get('v', view(empty_choice=empty))
    if mask:
        b += bytes([0, 0, 0, 0, 40]) + views.get('mask', view(empty_choice=empty))  # F16, n_q rows, m2=m3=1, 16% -inf
    if sinks:
        b += views.get('sinks', view())
    if q_pos:
        b += bytes([0]) + view()
    if kv_pos:
        b += bytes([0]) + view(empty_choice=empty)
    b += views.get('state', view()) + views.get('out', view()) + b'\x00'  # no aliasing
    if mode % 4 == 2 or mode % 4 == 3 and mode & 4:
        b += bytes([len(segments)]) + b''.join(u16(c) for c in segments) + b'\x00'
    b += bytes([nth - 1, ith]) + (b'\x00' if mode % 4 == 3 else b'') + bytes([recheck])
    return b


def merge(op=0, DV=32, n_head=4, n_q=2, n_seq=1, seed=1, views=()):
    b = bytes([op, DV - 1, n_head - 1, n_q - 1, n_seq - 1, 0]) + u64(seed)
    for i in range(4):
        b += views[i] if i < len(views) else view()
    return b + b'\x00'


def sinks(DV=32, n_head=4, n_q=2, n_seq=1, seed=1, views=()):
    b = bytes([DV - 1, n_head - 1, n_q - 1, n_seq - 1, 0]) + u64(seed)
    for i in range(3):
        b += views[i] if i < len(views) else view()
    return b + b'\x00'


def lse(do_import, base=0, DV=32, n_head=4, n_q=2, n_seq=1, special_rate=0, seed=1, views=()):
    b = bytes([int(do_import), DV - 1, n_head - 1, n_q - 1, n_seq - 1, base, 0, special_rate]) + u64(seed)
    for i in range(3):
        b += views[i] if i < len(views) else view()
    return b + b'\x00'


def quant(op, type_index, n, exponent_index=0, raw=False, seed=1):
    return bytes([op, type_index]) + u16(n) + bytes([0, 0, 0, 0, 0xff if raw else 0, exponent_index]) + u64(seed)


PADDED = dict(layout=8, pads=(1, 2, 3))
PERMUTED = dict(layout=1)  # dimensions 2, 1, 3 from the innermost

SEEDS = {
    'fuzz_attention': {
        'f32-gqa-mask-sinks-causal': attention(mask=True, sinks=True, virtual_mask=2, q_pos0=4),
        'q8_0-k-q4_0-v-softcap': attention(types=(0, 3, 4), D=128, DV=128, n_kv=100, softcap=2, n_head_kv=1,
                                           heads_per_kv=4),
        'f16-padded-permuted-2-threads': attention(types=(1, 1, 2), D=40, DV=24, n_kv=257, threads=2,
                                                   views={'k': view(**PADDED), 'v': view(**PERMUTED),
                                                          'out': view(**PADDED)}),
        'bf16-sliding-window-positions': attention(types=(2, 2, 0), virtual_mask=3, window=2, q_pos=True,
                                                   kv_pos=True, n_seq_kv=2, seqs_per_kv=2, n_kv=64),
        'alibi-mask-portable': attention(max_bias=2, isa=1, mask=True, n_kv=33),
        'empty-segment-with-sinks': attention(n_kv=0, sinks=True),
        'segments-three': attention(mode=2, mask=True, kv_pos=True, virtual_mask=2, segments=(100, 200)),
        'part-of-three': attention(mode=3, nth=3, ith=1, mask=True, sinks=True),
        'segments-part': attention(mode=7, segments=(50,), nth=2, ith=0),
        'hostile-k-stride': attention(views={'k': view(edits=[(5, 1, 2)])}),  # k.nb[1] = 2^63
        'params-isa-minus-1': attention(params_edit=(7, 1)),  # an enum field holding a value C++ cannot name
        'params-nan-scale': attention(params_edit=(0, 0)),
    },
    'fuzz_merge': {
        'merge': merge(),
        'merge-padded': merge(DV=40, n_head=8, n_q=3, n_seq=2, views=(view(**PADDED), view(**PADDED))),
        'init': merge(op=2),
        'merge-with-itself': merge(op=3),
        'hostile-negative-extent': merge(views=(view(), view(), view(edits=[(0, 2, 0)]))),
    },
    'fuzz_sinks': {
        'sinks': sinks(),
        'sinks-padded': sinks(DV=17, n_head=12, n_q=5, n_seq=3, views=(view(), view(**PADDED), view(**PERMUTED))),
        'hostile-sinks-nb0': sinks(views=(view(edits=[(11, 0, 1)]),)),
    },
    'fuzz_lse': {
        'export-base-2': lse(False),
        'export-base-e': lse(False, base=1, n_head=8, n_q=3, n_seq=2),
        'import-with-inf-and-nan': lse(True, special_rate=64),
        'import-padded': lse(True, base=2, views=(view(**PADDED), view(**PERMUTED), view(**PADDED))),
        'bad-base': lse(False, base=5),
    },
    'fuzz_quant': {
        'quantize-q8_0': quant(0, 3, 64),
        'quantize-q4_0': quant(0, 4, 96),
        'round-trip-f16': quant(2, 1, 100, exponent_index=10),
        'round-trip-bf16': quant(2, 2, 33),
        'dequantize-q8_0': quant(1, 3, 128),
        'bad-n': quant(0, 3, 31),
    },
}

for target, seeds in SEEDS.items():
    folder = os.path.join(HERE, 'corpus', target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(data)
    print(f'{target}: {len(seeds)} seeds')
