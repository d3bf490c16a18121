#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ (run from anywhere: python3 fuzz/make_seeds.py).

Each seed spells out, byte by byte, the choices a target decodes (the order is the order of the reads in the target's
source; 0 is always the plain choice, and reads past the end return 0). The seeds are a starting point only: the
fuzzer mutates them, and a change to a target's decoding merely makes them start somewhere else.
"""
import os
import struct
import zlib

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


def paged(part=0, types=(1, 1), D=128, DV=128, n_q=1, n_head_kv=2, heads_per_kv=4, n_seq_kv=1, seqs_per_kv=1,
          page=4, n_pages=12, n_table=6, n_kv=80, features=0, seed=1, threads=1, isa=0, nth=1, ith=0):
    """fuzz_paged: pages of 1 << page keys; features: bit 0 mask, 1 sinks, 2 causal; every view plain (zeros)."""
    b = bytes([part, *types, D // 32 - 1, DV // 32 - 1, n_q - 1, n_head_kv - 1, heads_per_kv - 1, n_seq_kv - 1,
               seqs_per_kv - 1, page, 0, n_pages - 1, n_table - 1]) + u16(n_kv) + bytes([0, features]) + u64(seed)
    b += bytes([0, threads - 1, isa])
    n_views = 8  # q, k, v, page table, (mask), (sinks), state, out: a plain layout byte and no edits each
    b += b'\x00\x00' * n_views
    return b + bytes([0, nth - 1, ith])


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


def cache_config(n_layer=1, n_head_kv=1, D=64, DV=64, chunk=0, tiers=((0, 0),), n_keep=0, max_tokens=0, edit=()):
    """fuzz_cache's decode_config: table indices (see the tables there). tiers: (type index, capacity index) and,
    for a last tier after the hot one, a third item: None (RAM) or the file-backed tier's type index."""
    b = bytes([n_layer - 1, n_head_kv - 1, [32, 64].index(D), [32, 64].index(DV), len(tiers) - 1, chunk])
    for i, t in enumerate(tiers):
        b += bytes(t[:2])
        if i == len(tiers) - 1 and i > 0:
            b += bytes([0]) if len(t) < 3 or t[2] is None else bytes([1, t[2]])
    return b + bytes([n_keep, max_tokens]) + (bytes([0xf0, *edit]) if edit else b'\x00')


def cache_append(n_index=0, n_byte=0, layer=0, types=(0, 0)):
    """op 0: layer, then (op_append) a rare byte, the layer, n, a rare byte, k's type and view, v's type and view."""
    return bytes([0, layer, 0, layer, n_byte, n_index, 0, types[0]]) + view() + bytes([types[1]]) + view()


def cache_attn_args(n_q=1, n_head_mult=1, threads=1, scale=0, softcap=0, max_bias=0, mask=0, window=0, q_pos0=0,
                    sinks=False):
    """decode_attn: shape, parameters (table indices), q's type and view, sinks, state and out."""
    b = bytes([n_q - 1, n_head_mult - 1, threads - 1, scale, softcap, max_bias, mask, window, q_pos0, 0, 0]) + view()
    b += bytes([1]) + view() if sinks else bytes([0])
    return b + view() + view()


def cache_attn(layer=0, **kw):
    return bytes([2, layer, 0]) + cache_attn_args(**kw)


def cache_ops(config, ops, seed=1):
    return b'\x00' + config + u64(seed) + bytes([len(ops) - 1]) + b''.join(ops)


def cache_file(n_keep=2, hot=(1, 32, 5), cold=(8, 0, 20), D=32, DV=32, H=1, chunk=16, path=None, break_crcs=False):
    """A cache file written from docs/cache.md (not by the library): one layer, a hot tier and a cold tier given as
    (type, capacity, tokens), n_keep tokens at the hot type; rows are small finite values."""
    def rows(type_, n):
        if type_ in (0, 1):  # F32, F16
            return b''.join(struct.pack('<f' if type_ == 0 else '<e', ((i * 7) % 13 - 6) / 8) for i in range(n))
        blocks = n // 32  # Q8_0: an F16 scale, then 32 int8
        return b''.join(struct.pack('<e', 0.01) + bytes((j * 5) % 256 for j in range(32)) for _ in range(blocks))

    def tier_rows(type_, tokens):
        return (rows(type_, D) * tokens + rows(type_, DV) * tokens) * H

    config = struct.pack('<iiqqi', 1, H, D, DV, 2)
    for i, (type_, capacity, _) in enumerate((hot, cold)):
        p = path.encode() if path and i == 1 else None
        config += struct.pack('<iqI', type_, capacity, len(p) if p else 0xffffffff) + (p or b'')
    config += struct.pack('<qqq', n_keep, 0, chunk)
    held = n_keep + hot[2] + cold[2]
    layer = struct.pack('<qq', held, n_keep) + tier_rows(hot[0], n_keep)
    layer += struct.pack('<qq', 0, hot[2]) + tier_rows(hot[0], hot[2])
    layer += struct.pack('<qq', 0, cold[2]) + tier_rows(cold[0], cold[2])

    def section(kind, payload):
        head = struct.pack('<IIQ', kind, 0, len(payload)) + payload
        return head + struct.pack('<I', 0 if break_crcs else zlib.crc32(head))

    body = section(1, config) + section(2, layer)
    header = b'FSTCACHE' + struct.pack('<IIQI', 1, 32, 32 + len(body), 2)
    return header + struct.pack('<I', 0 if break_crcs else zlib.crc32(header)) + body


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
        # Long decodes (a KV-heads byte of 248 or more): 32 heads at D = 32; 2 heads at D = DV = 128 (252 or more).
        'long-decode-q8_0-segments': attention(mode=2, types=(0, 3, 3), D=32, DV=32, n_head_kv=249, n_kv=4600,
                                               segments=(1000, 2100, 3000)),
        'long-decode-wide-f16-q8_0-2-threads': attention(types=(0, 1, 3), D=128, DV=128, n_head_kv=253,
                                                         heads_per_kv=4, n_kv=4600, threads=2),
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
    'fuzz_paged': {
        'f16-decode-16-key-pages': paged(),
        'q8_0-q4_0-32-key-pages-mask-sinks-2-threads': paged(types=(3, 4), D=64, DV=32, page=5, n_kv=150, features=3,
                                                             threads=2),
        'bf16-f32-prefill-causal-two-sequences-parts': paged(part=1, types=(2, 0), D=32, DV=64, n_q=5, n_head_kv=1,
                                                             heads_per_kv=2, n_seq_kv=2, page=6, n_pages=5, n_table=3,
                                                             n_kv=190, features=4, nth=3, ith=1),
        'no-keys': paged(n_kv=0),
        'token-level-pages-two-chunks': paged(types=(1, 1), D=32, DV=32, n_head_kv=1, heads_per_kv=1, page=0,
                                              n_pages=12, n_table=48, n_kv=1400),
        'long-decode-wide-q8_0-f16-64-key-pages': paged(types=(3, 1), n_head_kv=253, page=6, n_pages=12, n_table=20,
                                                        n_kv=4599),
    },
    'fuzz_cache': {
        'ops-f16-q8_0-n_keep-append-attn-save': cache_ops(
            cache_config(n_head_kv=2, DV=32, tiers=((0, 0), (0, 0)), n_keep=1),
            [cache_append(n_index=3), cache_append(n_index=4, n_byte=99, types=(1, 1)),
             cache_attn(n_q=2, n_head_mult=2, mask=1, sinks=True), bytes([7, 0]), bytes([5, 0]) + cache_attn_args(),
             bytes([6, 0, 0, 0x10, 0x00, 0x55])]),
        'ops-three-tiers-file-backed-streaming': cache_ops(
            cache_config(n_layer=2, chunk=1, tiers=((1, 0), (1, 0), (0, 0, 0)), n_keep=1, max_tokens=3),
            [cache_append(n_index=4, n_byte=119), cache_append(n_index=2, layer=1), cache_append(n_index=3),
             cache_attn(mask=2, window=2, softcap=2, q_pos0=1), bytes([4, 0, 1]),
             bytes([5, 1, 0]) + cache_attn_args() + cache_attn_args(max_bias=1), bytes([6, 0, 1, 0x34, 0x12])]),
        'ops-single-hot-tier-f32': cache_ops(cache_config(D=32, tiers=((1, 0),)),
                                             [cache_append(n_index=1), cache_attn(threads=2, scale=1)]),
        'ops-invalid-config-q8_0-hot': cache_ops(cache_config(tiers=((0, 0), (0, 0)), edit=(0, 5, 3)),
                                                 [cache_append()]),
        'file-valid': b'\x01' + cache_file(),
        'file-valid-q8_0-file-tier': b'\x01' + cache_file(n_keep=0, hot=(0, 32, 3), cold=(8, 0, 4), D=64,
                                                           path='/tmp/fuzz_cache-seed.tier'),
        'file-checksums-fixed-by-the-harness': b'\x02' + cache_file(H=2, break_crcs=True),
    },
}

for target, seeds in SEEDS.items():
    folder = os.path.join(HERE, 'corpus', target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(data)
    print(f'{target}: {len(seeds)} seeds')
