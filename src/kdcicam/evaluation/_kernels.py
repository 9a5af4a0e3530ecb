"""Compiled kernels of the fast evaluator (numba; the GIL is released, so a thread pool uses every core).

``box_ious`` answers, for one 8-bit score map and every CAM threshold, the best IoU that the
protocol's single-contour box and its multi-contour boxes reach against the GT boxes, without
tracing a single contour. Why it is exact:

- The binary maps ``q > L`` are nested: lowering ``L`` only adds pixels. Pixels are added in
  decreasing grey level into a union-find with 8-connectivity (OpenCV's foreground connectivity),
  and after each threshold's level the live components are read off. An outer contour's bounding
  box is its component's bounding box.
- ``cv2.contourArea`` of an outer contour (the polygon through its border pixels' centres) is
  ``#full 2x2 cells + #three-pixel 2x2 cells / 2`` of the component with its holes filled; we keep
  the count for the component itself, exact when it has no holes, a lower bound otherwise.
- Holes (4-connected background components not reaching the border) are counted through the Euler
  number, updated per pixel from its 8 neighbours (Gray's bit quads): ``#holes = #components - Euler``.
- A hole's contour has the hole's bounding box grown by one pixel; the holes' boxes come from a
  second union-find over the background (4-connectivity) in increasing grey level, run only up
  to the highest level that has a hole.
- OpenCV lists a contour before the holes inside it, and a hole's contour never encloses more area
  than its parent's, so a hole never wins ``max(contours, key=cv2.contourArea)``; that choice is the
  component of largest (filled) area.

- In the single-contour mode alone, the pass stops at the first threshold whose largest component's box is
  the whole (clipped) grid and whose cell area exceeds half the grid: a component's pixels number at least
  its cell area, so every other component, present or to come, lies outside it (an 8-connected component
  touching the frame is in no other's contour) and has less than half the grid, filled; areas only grow
  as the threshold falls, so every lower threshold has that box. On CAM-like maps this skips the many
  low-valued pixels (15 % of the single-contour kernel's time, 300 CAM-like maps).

- A hole's box lies inside its component's box, so its IoU is at most ``|P & G| / |G|`` for the
  component's box ``P`` and a GT box ``G``: where no component reaches the components' best IoU by
  that bound, the holes cannot change the multi-contour answer and are not looked for.

When the largest component is not certain (two components tied, or holes make the area bound
inconclusive) and the components it may be do not all score the same IoU, or a threshold with holes
that may matter lies beyond the background pass (sparse high ones are cheaper to trace than to
extend the pass to), the threshold is flagged and the caller traces it with ``cv2.findContours``.
The property tests compare every threshold with the plain loop.

How it is fast: the union-find runs over component ids, not pixels. A pixel's label is the id of
the component it joined; the ids' parent array is small and stays in the L1 cache. Most pixels
(nine in ten on CAM-like maps) have exactly one group of already-inserted neighbours, in the
component the previous pixel joined: the passes' inner loop handles only those, with that
component's box and pending area in registers, and leaves every other pixel (a new component, a
merge, another component) to the general code around it. Pixels that are not inserted yet read a
sentinel id, so the inner loop's test is a single comparison. Boxes are kept as (x, padded index)
ranges: the padded index orders pixels by row, so its minimum and maximum give the rows. Inside a
threshold's group the pixels come in raster order, so the padded index only grows along a stretch
of pixels that the inner loop adds to one component: the stretch's first and last pixels are its
minimum and maximum, and the loop updates only the x range per pixel (the row range once per
stretch), with the same box as a per-pixel update.

The passes stay per pixel rather than per row run of one group: on CAM-like maps (the tests'
smooth maps, 100 thresholds) such runs are 2.5 pixels long on average, too short to pay for the
bookkeeping of a run's neighbours.

Indices into the work arrays are unsigned where it matters: numba then skips the negative-index
wrap-around check, which costs as much as the rest of the inner loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit

FLAG_SINGLE = 1  #: the single-contour answer at this threshold needs the plain findContours
FLAG_MULTI = 2   #: the multi-contour answer at this threshold needs the plain findContours
#: one plain findContours (with the Python around it) costs about as much as this many pixels of
#: the background pass, so sparse high thresholds with holes are traced rather than paid for with the
#: whole pass. Multi-contour CPU time on 1,389 CAM-like maps is flat from 32,000 to 96,000, 7-10 % below
#: the 8,000 used before (benchmarks/results/trace_cost.json); the metrics never change. 32,000, the low
#: end: above 50,176 (224 x 224) a 224 map is never traced, and tracing pays on larger maps
_TRACE_PIXELS = 32000

# Neighbour order of the 8-bit neighbourhood mask: bit i set when neighbour i is foreground.
#   0 1 2        (-1,-1) (-1,0) (-1,1)
#   3 . 4        ( 0,-1)   p    ( 0,1)
#   5 6 7        ( 1,-1) ( 1,0) ( 1,1)
_NDY = np.array([-1, -1, -1, 0, 0, 1, 1, 1], dtype=np.int64)
_NDX = np.array([-1, 0, 1, -1, 1, -1, 0, 1], dtype=np.int64)


def _neighbourhood_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per 8-neighbourhood mask: the change in (2 x contour area) and (4 x Euler number) when the
    centre pixel turns on, and the groups of mutually 8-adjacent foreground neighbours (one find
    per group is enough)."""
    area2 = {4: 2, 3: 1}  # per 2x2 cell: full cell = 1 pixel^2, three pixels = half
    euler4 = {1: 1, 3: -1}  # Q1 - Q3 - 2 QD (diagonal pairs below)

    def cell_area2(bits: tuple[int, int, int, int]) -> int:
        return area2.get(sum(bits), 0)

    def cell_euler4(bits: tuple[int, int, int, int]) -> int:
        if sum(bits) == 2 and bits[0] == bits[3]:  # TL and BR alike: a diagonal pair
            return -2
        return euler4.get(sum(bits), 0)

    d_area = np.zeros(256, dtype=np.int64)
    d_euler = np.zeros(256, dtype=np.int64)
    ngroups = np.zeros(256, dtype=np.int64)
    reps = np.zeros((256, 4), dtype=np.int64)
    for mask in range(256):
        on = [(mask >> i) & 1 for i in range(8)]
        n = {(int(_NDY[i]), int(_NDX[i])): on[i] for i in range(8)}
        for cy, cx in ((-1, -1), (-1, 0), (0, -1), (0, 0)):  # the four cells holding the centre
            cells = [(cy, cx), (cy, cx + 1), (cy + 1, cx), (cy + 1, cx + 1)]
            before = tuple(0 if c == (0, 0) else n[c] for c in cells)
            after = tuple(1 if c == (0, 0) else n[c] for c in cells)
            d_area[mask] += cell_area2(after) - cell_area2(before)
            d_euler[mask] += cell_euler4(after) - cell_euler4(before)
        seen: set[int] = set()
        for i in range(8):
            if not on[i] or i in seen:
                continue
            reps[mask, ngroups[mask]] = i
            ngroups[mask] += 1
            stack = [i]
            seen.add(i)
            while stack:
                j = stack.pop()
                for k in range(8):
                    if on[k] and k not in seen and max(abs(_NDY[j] - _NDY[k]), abs(_NDX[j] - _NDX[k])) == 1:
                        seen.add(k)
                        stack.append(k)
    return d_area, d_euler, ngroups, reps


_DAREA2, _DEULER4, _NGROUPS, _REPS = _neighbourhood_tables()


def _background_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per 8-neighbourhood background mask: the groups of background 4-neighbours (up 1, left 3,
    right 4, down 6) already 4-connected around the corner (up and left through up-left, ...)."""
    links = {(1, 3): 0, (1, 4): 2, (3, 6): 5, (4, 6): 7}  # pair of 4-neighbours -> their corner
    ngroups = np.zeros(256, dtype=np.int64)
    reps = np.zeros((256, 4), dtype=np.int64)
    for mask in range(256):
        on = [i for i in (1, 3, 4, 6) if (mask >> i) & 1]
        seen: set[int] = set()
        for i in on:
            if i in seen:
                continue
            reps[mask, ngroups[mask]] = i
            ngroups[mask] += 1
            stack = [i]
            seen.add(i)
            while stack:
                j = stack.pop()
                for k in on:
                    corner = links.get((min(j, k), max(j, k)))
                    if k not in seen and corner is not None and (mask >> corner) & 1:
                        seen.add(k)
                        stack.append(k)
    return ngroups, reps


_BG_NGROUPS, _BG_REPS = _background_tables()


# An order entry: (padded index << 33) | (x << 18) | (foreground mask << 8) | background mask. Maps
# are at most 32767 x 32767, so the padded index fits 31 bits and x 15.
_P_SHIFT = np.uint64(33)
_X_SHIFT = np.uint64(18)
_X_MASK = np.uint64(0x7FFF)


@njit(cache=True, nogil=True, inline="always")
def _find(parent, a):
    """Root of component ``a``, with path halving when the path is longer than one step (most
    labels point straight at their root: no store then)."""
    r = np.uint64(parent[np.uint64(a)])
    if np.uint64(parent[r]) == r:
        return r
    a = r
    while np.uint64(parent[a]) != a:
        parent[a] = parent[np.uint64(parent[a])]
        a = np.uint64(parent[a])
    return a


_LOW = np.int64(1 << 31)
_MASK32 = np.int64(0xFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _low_field(pack):
    """The signed low 32-bit field of a packed ``(high << 32) + low`` sum (exact while the low
    field's true value fits 32 bits)."""
    return ((pack + _LOW) & _MASK32) - _LOW


@njit(cache=True, nogil=True, inline="always")
def _best_iou(x0, y0, x1, y1, gt):
    """Max over GT boxes of the protocol's IoU (inclusive pixels; a union <= 0 scores 0)."""
    best = 0.0
    area_a = (x1 - x0 + 1) * (y1 - y0 + 1)
    for g in range(gt.shape[0]):
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        inter = max(0, iw) * max(0, ih)
        union = area_a + (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1) - inter
        iou = 0.0
        if union > 0:
            iou = inter / union
        best = max(best, iou)
    return best


@njit(cache=True, nogil=True, inline="always")
def _inner_iou_bound(x0, y0, x1, y1, gt):
    """An upper bound of the protocol's IoU (:func:`_best_iou`) of any box inside this one: the max over GT
    boxes of ``|box & G| / |G|`` (a box inside meets G in less and its union with G is at least G); the
    rounded quotients keep the order of the exact ones. Infinite for a GT box of no area."""
    best = 0.0
    for g in range(gt.shape[0]):
        area_g = (gt[g, 2] - gt[g, 0] + 1) * (gt[g, 3] - gt[g, 1] + 1)
        if area_g <= 0:
            return np.inf
        iw = min(x1, gt[g, 2]) - max(x0, gt[g, 0]) + 1
        ih = min(y1, gt[g, 3]) - max(y0, gt[g, 1]) + 1
        best = max(best, max(0, iw) * max(0, ih) / area_g)
    return best


@njit(cache=True, nogil=True)
def best_ious(boxes, gt):
    """Per box ``[n, 4]`` (valid: non-negative, ``x1 >= x0``, ``y1 >= y0``), its best IoU with the
    GT boxes: :func:`~kdcicam.evaluation.boxes.box_iou_matrix` without the checks, for the few
    traced thresholds, where those checks cost more than the IoUs."""
    out = np.empty(boxes.shape[0], dtype=np.float64)
    for i in range(boxes.shape[0]):
        out[i] = _best_iou(boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3], gt)
    return out


_ONE_BITS = np.uint64(0x3FF0000000000000)  #: the bits of 1.0: a double in [+0.0, 1.0] has bits 0 .. these
_NEG_ZERO_BITS = np.uint64(0x8000000000000000)  #: -0.0, also in [0, 1]; every other value above _ONE_BITS is not
_ABS_BITS = np.uint64(0x7FFFFFFFFFFFFFFF)


@njit(cache=True, nogil=True, inline="always")
def _quantize(scoremap, q, hist):
    """:func:`quantize`, and the map's minimum (what context leakage subtracts; taken in the check's pass,
    so that :func:`batch_box_ious` need not read the map once more for it).

    The check compares the values' bits as integers: a double lies in [0, 1] exactly when its bits are at
    most 1.0's or it is -0.0 (NaN, inf and negatives have larger bits), and for such values the order of
    the bits (sign cleared) is the order of the values. Float comparisons with NaN kept this loop scalar;
    the integer one vectorises (five times faster; it was half of the quantisation). The minimum of a valid
    map comes out as +0.0 where it is -0.0, which changes no difference taken from it."""
    flat = scoremap.ravel()
    out = q.ravel()
    n = flat.shape[0]
    bits = flat.view(np.uint64)
    nbad = 0
    low = _ABS_BITS
    for i in range(n):
        u = bits[i]
        nbad += np.int64((u > _ONE_BITS) & (u != _NEG_ZERO_BITS))
        low = min(low, u & _ABS_BITS)
    lo = np.array([low], dtype=np.uint64).view(np.float64)[0]
    if nbad:
        return np.int64(-1), lo
    top = np.uint8(0)
    for i in range(n):
        v = np.uint8(flat[i] * 255.0)
        out[i] = v
        top = max(top, v)
    hist[:] = 0
    for i in range(0, n - 3, 4):
        for k in range(4):
            hist[k, out[i + k]] += 1
    for i in range(n - n % 4, n):
        hist[0, out[i]] += 1
    return np.int64(top), lo


@njit(cache=True, nogil=True)
def quantize(scoremap, q, hist):
    """``q = uint8(map * 255)`` (truncation, as numpy's cast), and the grey-level histogram (split
    four ways: ``hist [4, 256]``, summed by the caller). Returns the largest grey level, or -1
    (``q`` then unspecified) when a value is NaN, infinite or outside [0, 1].

    Three plain loops (check, cast, count) run faster than one that does all three: the first two
    vectorise, and the histogram's read-modify-write chains then read bytes, not doubles."""
    return _quantize(scoremap, q, hist)[0]


@njit(cache=True, nogil=True)
def threshold_levels(top, thresholds):
    """``int(t * max(q))`` per threshold, as the protocol computes ``cv2.threshold``'s ``thresh``
    (float64 product, truncated)."""
    levels = np.empty(thresholds.shape[0], dtype=np.int64)
    for t in range(thresholds.shape[0]):
        levels[t] = np.int64(thresholds[t] * np.float64(top))
    return levels


@njit(cache=True, nogil=True, inline="always")
def _mask_row(bands, masks, y, w, pw, up_pre, down_pre):
    """Neighbourhood masks of row ``y`` (see :func:`_band_order`). Bit ``k`` of the foreground
    mask: neighbour ``k``'s group rank is lower, or equal and it comes first in the group's order;
    of the background mask: higher, or equal and first. ``up_pre`` / ``down_pre`` = 1 when the
    row above / below comes first (the left neighbour always does, the right one never). Inlined
    with constant ``pre``s, the loop vectorises; unsigned indices skip wrap-around checks."""
    one = np.uint64(1)
    upw = np.uint64(pw)
    row = np.uint64((y + 1) * pw + 1)
    out = np.uint64(y * w)
    for xi in range(w):
        x = np.uint64(xi)
        c = row + x
        a = c - upw
        d = c + upw
        b = np.int32(bands[c])
        bu = b + np.int32(up_pre)
        bd = b + np.int32(down_pre)
        bgu = b - np.int32(up_pre)
        bgd = b - np.int32(down_pre)
        u0 = np.int32(bands[a - one])
        u1 = np.int32(bands[a])
        u2 = np.int32(bands[a + one])
        m0 = np.int32(bands[c - one])
        m2 = np.int32(bands[c + one])
        d0 = np.int32(bands[d - one])
        d1 = np.int32(bands[d])
        d2 = np.int32(bands[d + one])
        fg = (np.int32(u0 < bu) | (np.int32(u1 < bu) << 1) | (np.int32(u2 < bu) << 2) | (np.int32(m0 <= b) << 3)
              | (np.int32(m2 < b) << 4) | (np.int32(d0 < bd) << 5) | (np.int32(d1 < bd) << 6) | (np.int32(d2 < bd) << 7))
        bg = (np.int32(u0 > bgu) | (np.int32(u1 > bgu) << 1) | (np.int32(u2 > bgu) << 2) | (np.int32(m0 >= b) << 3)
              | (np.int32(m2 > b) << 4) | (np.int32(d0 > bgd) << 5) | (np.int32(d1 > bgd) << 6) | (np.int32(d2 > bgd) << 7))
        masks[out + x] = np.uint16((fg << 8) | bg)


@njit(cache=True, nogil=True)
def _band_order(q, hist, levels, order, bands, masks):
    """Pixels grouped by the threshold at which they turn foreground (counting sort; inside a
    group, raster order, so that padded indices grow along a group), each with its neighbourhood at
    the moment it is inserted by either pass. (Filling the image's two halves in step, to spread
    the writes over the group counters, measured slower here: CPU time on a loaded AMD EPYC.)

    Group ``b`` holds the pixels that enter the foreground at threshold index ``nt - 1 - b``;
    group ``nt`` those that never do. A pixel of group ``b`` turns background, going up, at
    threshold ``nt - b``. Entries are ``(p << 33) | (x << 18) | (fg_mask << 8) | bg_mask``, ``p``
    the pixel's index in the padded ``(h + 2) x (w + 2)`` grid: bit
    ``k`` of ``fg_mask`` is set when neighbour ``k`` is foreground as the top-down pass inserts
    the pixel (an earlier group, or the same group and earlier in its order), of ``bg_mask``
    when it is background as the bottom-up pass inserts it (a later group or the frame, or the
    same group and earlier). The masks are computed here, row by row and vectorised, so that
    neither pass keeps a neighbourhood map of its own (whose scattered reads and writes cost a
    third of a pass). ``bands`` (``(h + 2) * (w + 2)`` int16) and ``masks`` (``h * w`` uint16)
    are work buffers; ``hist`` is the four-way grey-level histogram from :func:`quantize`."""
    h, w = q.shape
    nt = levels.shape[0]
    band = np.empty(256, dtype=np.int32)
    t = nt - 1
    for v in range(255, -1, -1):
        while t >= 0 and levels[t] >= v:
            t -= 1
        band[v] = nt - 1 - t  # t = -1: never foreground -> group nt
    count = np.zeros(nt + 1, dtype=np.int64)
    for v in range(256):
        count[band[v]] += hist[0, v] + hist[1, v] + hist[2, v] + hist[3, v]
    start = np.empty(nt + 2, dtype=np.int64)
    acc = 0
    for b in range(nt + 1):
        start[b] = acc
        acc += count[b]
    start[nt + 1] = acc
    pw = w + 2
    # compare ranks of groups (at most 256 distinct groups: int16 lanes in the vectorised mask loop)
    rank_of = np.empty(256, dtype=np.int16)
    group_of_rank = np.empty(257, dtype=np.int64)
    nr = 0
    for v in range(255, -1, -1):  # band[] grows as v falls
        if v == 255 or band[v] != band[v + 1]:
            group_of_rank[nr] = band[v]
            nr += 1
        rank_of[v] = nr - 1
    frame = np.int16(nr)  # never foreground, always background
    for x in range(pw):
        bands[x] = frame
        bands[(h + 1) * pw + x] = frame
    flat = q.ravel()
    for y in range(h):
        row = (y + 1) * pw
        bands[row] = frame
        bands[row + w + 1] = frame
        src = np.uint64(y * w)
        dst = np.uint64(row + 1)
        for xi in range(w):
            x = np.uint64(xi)
            bands[dst + x] = rank_of[np.uint64(flat[src + x])]
    for y in range(h):  # inside a group, raster order: the row above comes first, the row below after
        _mask_row(bands, masks, y, w, pw, 1, 0)
    fill = np.empty(nr, dtype=np.uint64)
    for r in range(nr):
        fill[r] = start[group_of_rank[r]]
    # Neighbours often share a group: the current group's counter stays in a register while they
    # do (the read-modify-write chain of a counter in memory measured an eighth slower).
    cb = np.uint64(0)
    cf = fill[0]
    for y in range(h):
        row = np.uint64((y + 1) * pw + 1)
        mrow = np.uint64(y * w)
        for xi in range(w):
            x = np.uint64(xi)
            p = row + x
            b = np.uint64(bands[p])
            if b != cb:
                fill[cb] = cf
                cf = fill[b]
                cb = b
            order[cf] = (p << _P_SHIFT) | (x << _X_SHIFT) | np.uint64(masks[mrow + x])
            cf += np.uint64(1)
    return start


@njit(cache=True, nogil=True)
def workspace(h, w):
    """Work buffers for maps of ``h x w``, allocated once per batch rather than per image (a batch of one
    map when the evaluator's workers read the maps themselves: with glibc's adaptive thresholds, measured
    no slower than before without the MALLOC_* settings):
    group ranks and labels over the padded grid, the pixel order and the neighbourhood masks, and
    per component id its parent, union rank, box ``[x0, p0, x1, p1]`` (x and padded-index ranges),
    2 x area, place in the live list, and the live list. There are at most ``h * w + 1`` ids (0 is
    a scratch record, the last one the sentinel of pixels not inserted yet)."""
    npad = (h + 2) * (w + 2)
    ncap = h * w + 3
    return (np.zeros(npad, dtype=np.int16), np.empty(npad, dtype=np.uint32), np.empty(h * w, dtype=np.uint64),
            np.empty(h * w, dtype=np.uint16), np.empty(ncap, dtype=np.uint32), np.empty(ncap, dtype=np.uint8),
            np.empty((ncap, 4), dtype=np.int32), np.empty(ncap, dtype=np.int64), np.empty(ncap, dtype=np.uint32),
            np.empty(ncap, dtype=np.uint32))


@njit(cache=True, nogil=True)
def _foreground_pass(shape, order, start, gt, out_single, out_multi, flags, holes, hole_need, ws, with_multi):
    """Top-down union-find over the foreground. Fills the single-contour IoU (or a flag), the best
    IoU over component boxes (when ``with_multi``), and the number of holes, per threshold; with
    ``with_multi``, ``hole_need[t] = 1`` where holes could raise the multi-contour answer: a hole's
    box lies inside its component's (its contour runs over the component's pixels), so no hole
    beats the components' best IoU when no component's box covers more of a GT box than that
    (:func:`_inner_iou_bound`), and then neither the background pass nor a trace is needed there."""
    h, w = shape
    nt = start.shape[0] - 2
    pw = w + 2
    lab, parent, crank, box, area2, pos, live = ws[1], ws[4], ws[5], ws[6], ws[7], ws[8], ws[9]
    zero = np.uint64(0)
    one = np.uint64(1)
    sent = np.uint64(parent.shape[0] - 1)
    lab[:] = np.uint32(sent)  # nothing inserted yet
    parent[sent] = sent
    parent[zero] = zero
    offs = np.empty(8, dtype=np.uint64)
    for i in range(8):
        offs[i] = np.uint64(_NDY[i] * pw + _NDX[i])  # negative offsets wrap, and so does the sum
    # per neighbourhood mask, one table row: the neighbour whose label the inner loop reads (the
    # pixel itself, i.e. the sentinel, unless exactly one group), and (4 x Euler << 32) + 2 x area
    # change
    tab = np.empty(512, dtype=np.uint64)
    for m in range(256):
        tab[2 * m] = offs[_REPS[m, 0]] if _NGROUPS[m] == 1 else zero
        tab[2 * m + 1] = np.uint64((_DEULER4[m] << 32) + _DAREA2[m])
    bx0 = box[:, 0]
    bp0 = box[:, 1]
    bx1 = box[:, 2]
    bp1 = box[:, 3]
    nlive = 0
    ncomp = one
    empty_iou = _best_iou(0, 0, 0, 0, gt)
    npix = h * w
    # The cached component ("cur", 0 = none) keeps its box and pending area in registers; they are
    # written back when another component takes its place and at the end of each threshold's pixels.
    cur = zero
    pack = np.int64(0)  # (4 x Euler number << 32) + pending 2 x area of cur
    cx0 = cx1 = cp0 = cp1 = np.int64(0)

    for b in range(nt):
        t = nt - 1 - b
        if b > 0 and start[b + 1] == start[b]:  # same binary map as the previous threshold
            out_single[t] = out_single[t + 1]
            out_multi[t] = out_multi[t + 1]
            flags[t] = flags[t + 1]
            holes[t] = holes[t + 1]
            hole_need[t] = hole_need[t + 1]
            continue
        i = np.uint64(start[b])
        end = np.uint64(start[b + 1])
        while i < end:
            first = i
            while True:  # the common case: one group of neighbours, in the cached component
                e = order[i]
                p = e >> _P_SHIFT
                m2 = (e >> np.uint64(7)) & np.uint64(0x1FE)  # 2 x foreground mask
                if np.uint64(parent[np.uint64(lab[p + tab[m2]])]) != cur:
                    break
                x = np.int64((e >> _X_SHIFT) & _X_MASK)
                lab[p] = np.uint32(cur)
                cx0 = min(cx0, x)
                cx1 = max(cx1, x)
                pack += np.int64(tab[m2 + one])
                i += one
                if i == end:
                    break
            if i != first:  # padded indices grow inside a group: the stretch's first and last bound it
                cp0 = min(cp0, np.int64(order[first] >> _P_SHIFT))
                cp1 = max(cp1, np.int64(order[i - one] >> _P_SHIFT))
            if i == end:
                break
            e = order[i]
            p = e >> _P_SHIFT
            x = np.int64((e >> _X_SHIFT) & _X_MASK)
            mask = (e >> np.uint64(8)) & np.uint64(0xFF)
            ng = _NGROUPS[mask]
            if ng == 0:  # a new component
                r = ncomp
                ncomp += one
                parent[r] = r
                crank[r] = 0
                area2[r] = 0
                box[r, 0] = x
                box[r, 1] = p
                box[r, 2] = x
                box[r, 3] = p
                pos[r] = nlive
                live[nlive] = r
                nlive += 1
            else:
                r = _find(parent, lab[p + offs[_REPS[mask, 0]]])
                for g in range(1, ng):
                    rb = _find(parent, lab[p + offs[_REPS[mask, g]]])
                    if rb == r:
                        continue
                    if crank[r] < crank[rb]:
                        r, rb = rb, r
                    elif crank[r] == crank[rb]:
                        crank[r] += 1
                    if cur == rb or cur == r:  # write the cached component back before it changes
                        a = _low_field(pack)
                        area2[cur] += a
                        pack -= a
                        box[cur, 0] = cx0
                        box[cur, 1] = cp0
                        box[cur, 2] = cx1
                        box[cur, 3] = cp1
                        cur = zero
                    parent[rb] = r
                    box[r, 0] = min(box[r, 0], box[rb, 0])
                    box[r, 1] = min(box[r, 1], box[rb, 1])
                    box[r, 2] = max(box[r, 2], box[rb, 2])
                    box[r, 3] = max(box[r, 3], box[rb, 3])
                    area2[r] += area2[rb]
                    j = np.uint64(pos[rb])
                    last = np.uint64(live[nlive - 1])
                    live[j] = last
                    pos[last] = j
                    nlive -= 1
            if r != cur:
                a = _low_field(pack)
                area2[cur] += a
                pack -= a
                box[cur, 0] = cx0
                box[cur, 1] = cp0
                box[cur, 2] = cx1
                box[cur, 3] = cp1
                cur = r
                cx0 = box[r, 0]
                cp0 = box[r, 1]
                cx1 = box[r, 2]
                cp1 = box[r, 3]
            lab[p] = np.uint32(r)
            cx0 = min(cx0, x)
            cx1 = max(cx1, x)
            cp0 = min(cp0, np.int64(p))
            cp1 = max(cp1, np.int64(p))
            pack += np.int64(tab[np.uint64(2) * mask + one])
            i += one
        a = _low_field(pack)
        area2[cur] += a
        pack -= a
        box[cur, 0] = cx0
        box[cur, 1] = cp0
        box[cur, 2] = cx1
        box[cur, 3] = cp1

        flags[t] = 0
        holes[t] = nlive - (pack >> 32) // 4
        if nlive == 0:
            out_single[t] = empty_iou
            out_multi[t] = empty_iou
            continue
        winner = np.uint64(live[0])
        for j in range(1, nlive):
            if area2[np.uint64(live[j])] > area2[winner]:
                winner = np.uint64(live[j])
        if with_multi:
            best_multi = 0.0
            bound = 0.0
            for j in range(nlive):
                r = np.uint64(live[j])
                x0, y0, x1, y1 = bx0[r], bp0[r] // pw - 1, min(bx1[r] + 1, w - 1), min(bp1[r] // pw, h - 1)
                best_multi = max(best_multi, _best_iou(x0, y0, x1, y1, gt))
                if holes[t] > 0:
                    bound = max(bound, _inner_iou_bound(x0, y0, x1, y1, gt))
            out_multi[t] = best_multi
            hole_need[t] = np.uint8(holes[t] > 0 and bound > best_multi)
        if nlive > 1:
            runner_up = -1  # the largest area (bound) among the others
            for j in range(nlive):
                r = np.uint64(live[j])
                if r == winner:
                    continue
                bound = area2[r]
                if holes[t] > 0:  # filled area <= polygon through the bounding box's corner centres
                    bound = 2 * (bx1[r] - bx0[r]) * (bp1[r] // pw - bp0[r] // pw)
                runner_up = max(runner_up, bound)
            if runner_up >= area2[winner]:
                # which is largest is not known, but the answer is when every component that may be
                # (its bound reaches the winner's area) scores as the winner does
                iou = _best_iou(bx0[winner], bp0[winner] // pw - 1, min(bx1[winner] + 1, w - 1),
                                min(bp1[winner] // pw, h - 1), gt)
                for j in range(nlive):
                    r = np.uint64(live[j])
                    if r == winner:
                        continue
                    bound = area2[r]
                    if holes[t] > 0:
                        bound = 2 * (bx1[r] - bx0[r]) * (bp1[r] // pw - bp0[r] // pw)
                    if bound >= area2[winner] and _best_iou(bx0[r], bp0[r] // pw - 1, min(bx1[r] + 1, w - 1),
                                                            min(bp1[r] // pw, h - 1), gt) != iou:
                        flags[t] = FLAG_SINGLE
                        iou = 0.0
                        break
                out_single[t] = iou
                continue
        out_single[t] = _best_iou(bx0[winner], bp0[winner] // pw - 1, min(bx1[winner] + 1, w - 1),
                                  min(bp1[winner] // pw, h - 1), gt)
        if not with_multi and area2[winner] > npix and bx0[winner] == 0 and bp0[winner] // pw == 1 \
                and bx1[winner] >= w - 2 and bp1[winner] // pw >= h - 1:
            # Settled for every lower threshold: the winner's box is the whole (clipped) grid, and no other
            # component can ever outgrow it. Its cell area (area2 is twice it) is over half the grid, and its
            # pixels number at least that; another's area is at most its filled pixels, all outside the winner
            # (an 8-connected component touching the frame lies in no other's contour), so under half the grid.
            # (Areas only grow as the threshold falls, and the winner's box is already the whole grid.)
            for t2 in range(t):
                out_single[t2] = out_single[t]
                flags[t2] = 0
            return


@njit(cache=True, nogil=True)
def _background_pass(shape, order, start, gt, hole_need, hole_iou, t_max, ws):
    """Bottom-up union-find over the background (4-connectivity; the image frame is one outside
    component). Fills the best IoU over hole boxes at every threshold up to ``t_max`` whose holes
    may matter (``hole_need``)."""
    h, w = shape
    nt = start.shape[0] - 2
    if t_max < 0:
        return
    pw = w + 2
    lab, parent, crank, box, pos, live = ws[1], ws[4], ws[5], ws[6], ws[8], ws[9]
    zero = np.uint64(0)
    one = np.uint64(1)
    sent = np.uint64(parent.shape[0] - 1)
    outer = one  # the frame's component: background, never a hole
    lab[:] = np.uint32(sent)
    for x in range(pw):
        lab[x] = outer
        lab[(h + 1) * pw + x] = outer
    for y in range(h):
        lab[(y + 1) * pw] = outer
        lab[(y + 1) * pw + w + 1] = outer
    parent[sent] = sent
    parent[zero] = zero
    parent[outer] = outer
    crank[outer] = 255
    pos[outer] = 0
    live[0] = outer
    nlive = 1
    ncomp = np.uint64(2)
    offs = np.empty(8, dtype=np.uint64)
    for i in range(8):
        offs[i] = np.uint64(_NDY[i] * pw + _NDX[i])
    tab = np.empty(256, dtype=np.uint64)  # the neighbour the inner loop reads (see the foreground pass)
    for m in range(256):
        tab[m] = offs[_BG_REPS[m, 0]] if _BG_NGROUPS[m] == 1 else zero
    bx0 = box[:, 0]
    bp0 = box[:, 1]
    bx1 = box[:, 2]
    bp1 = box[:, 3]
    cur = zero  # the cached component (0 = none), its box in registers
    cx0 = cx1 = cp0 = cp1 = np.int64(0)

    for t in range(t_max + 1):
        b = nt - t  # the group that turns background at threshold t
        i = np.uint64(start[b])
        end = np.uint64(start[b + 1])
        while i < end:
            first = i
            while True:  # the common case: one group of neighbours, in the cached component
                e = order[i]
                p = e >> _P_SHIFT
                if np.uint64(parent[np.uint64(lab[p + tab[e & np.uint64(0xFF)]])]) != cur:
                    break
                x = np.int64((e >> _X_SHIFT) & _X_MASK)
                lab[p] = np.uint32(cur)
                cx0 = min(cx0, x)
                cx1 = max(cx1, x)
                i += one
                if i == end:
                    break
            if i != first:  # as in the foreground pass
                cp0 = min(cp0, np.int64(order[first] >> _P_SHIFT))
                cp1 = max(cp1, np.int64(order[i - one] >> _P_SHIFT))
            if i == end:
                break
            e = order[i]
            p = e >> _P_SHIFT
            x = np.int64((e >> _X_SHIFT) & _X_MASK)
            mask = e & np.uint64(0xFF)
            ng = _BG_NGROUPS[mask]
            if ng == 0:
                r = ncomp
                ncomp += one
                parent[r] = r
                crank[r] = 0
                box[r, 0] = x
                box[r, 1] = p
                box[r, 2] = x
                box[r, 3] = p
                pos[r] = nlive
                live[nlive] = r
                nlive += 1
            else:
                r = _find(parent, lab[p + offs[_BG_REPS[mask, 0]]])
                for g in range(1, ng):
                    rb = _find(parent, lab[p + offs[_BG_REPS[mask, g]]])
                    if rb == r:
                        continue
                    if crank[r] < crank[rb]:
                        r, rb = rb, r
                    elif crank[r] == crank[rb]:
                        crank[r] += 1
                    if cur == rb or cur == r:  # write the cached component back before it changes
                        box[cur, 0] = cx0
                        box[cur, 1] = cp0
                        box[cur, 2] = cx1
                        box[cur, 3] = cp1
                        cur = zero
                    parent[rb] = r
                    box[r, 0] = min(box[r, 0], box[rb, 0])
                    box[r, 1] = min(box[r, 1], box[rb, 1])
                    box[r, 2] = max(box[r, 2], box[rb, 2])
                    box[r, 3] = max(box[r, 3], box[rb, 3])
                    j = np.uint64(pos[rb])
                    last = np.uint64(live[nlive - 1])
                    live[j] = last
                    pos[last] = j
                    nlive -= 1
            if r != cur:
                box[cur, 0] = cx0
                box[cur, 1] = cp0
                box[cur, 2] = cx1
                box[cur, 3] = cp1
                cur = r
                cx0 = box[r, 0]
                cp0 = box[r, 1]
                cx1 = box[r, 2]
                cp1 = box[r, 3]
            lab[p] = np.uint32(r)
            cx0 = min(cx0, x)
            cx1 = max(cx1, x)
            cp0 = min(cp0, np.int64(p))
            cp1 = max(cp1, np.int64(p))
            i += one
        box[cur, 0] = cx0
        box[cur, 1] = cp0
        box[cur, 2] = cx1
        box[cur, 3] = cp1
        if hole_need[t]:
            outside = _find(parent, outer)
            best = 0.0
            for j in range(nlive):
                r = np.uint64(live[j])
                if r == outside:
                    continue
                iou = _best_iou(bx0[r] - 1, bp0[r] // pw - 2, min(bx1[r] + 2, w - 1), min(bp1[r] // pw + 1, h - 1),
                                gt)
                best = max(best, iou)
            hole_iou[t] = best


@njit(cache=True, nogil=True)
def _background_extent(levels, start, hole_need):
    """Highest threshold index the background pass should reach: beyond it, thresholds whose holes
    may matter are cheaper to trace one by one than to extend the pass (-1: no pass)."""
    nt = levels.shape[0]
    traced = 0  # distinct levels with holes above the candidate cut
    last_level = -1
    for t in range(nt - 1, -1, -1):
        if hole_need[t] and levels[t] != last_level:
            traced += 1
            last_level = levels[t]
    best_t = -1
    best_cost = traced * _TRACE_PIXELS
    last_level = -1
    total = start[nt + 1]
    for t in range(nt):
        if hole_need[t] and levels[t] != last_level:
            traced -= 1
            last_level = levels[t]
            background = total - start[nt - t]  # pixels of groups nt - t .. nt
            cost = background + traced * _TRACE_PIXELS
            if cost < best_cost:
                best_cost = cost
                best_t = t
    return best_t


@njit(cache=True, nogil=True)
def box_ious(q, hist, top, thresholds, gt, out_single, out_multi, flags, with_holes, ws):
    """Best IoU per threshold of the single-contour box (``out_single``) and of all contour boxes
    (``out_multi``, only computed ``with_holes``, the multi-contour mode) for the uint8 map ``q`` whose
    largest value is ``top``. Where ``flags`` has FLAG_SINGLE or FLAG_MULTI, the caller must trace
    that threshold. Returns the thresholds' grey levels."""
    levels = threshold_levels(top, thresholds)
    nt = levels.shape[0]
    order = ws[2]
    start = _band_order(q, hist, levels, order, ws[0], ws[3])
    holes = np.zeros(nt, dtype=np.int64)
    hole_need = np.zeros(nt, dtype=np.uint8)
    _foreground_pass(q.shape, order, start, gt, out_single, out_multi, flags, holes, hole_need, ws, with_holes)
    if with_holes:
        t_cut = _background_extent(levels, start, hole_need)
        hole_iou = np.zeros(nt, dtype=np.float64)
        _background_pass(q.shape, order, start, gt, hole_need, hole_iou, t_cut, ws)
        for t in range(nt):
            if not hole_need[t]:
                continue
            if t > t_cut:
                flags[t] |= FLAG_MULTI
            elif hole_iou[t] > out_multi[t]:
                out_multi[t] = hole_iou[t]
    return levels


@njit(cache=True, nogil=True)
def batch_box_ious(maps, thresholds, gt_boxes, gt_offsets, first, stop, out_single, out_multi, flags,
                   levels, valid, with_holes, leak, with_leak):
    """``box_ious`` for images ``first .. stop - 1`` of ``maps [B, H, W]`` (float64); the GT boxes
    of image ``i`` are ``gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]``. ``valid[i]`` is False for a map
    with a value outside [0, 1] (its rows are left untouched). ``with_leak``: also ``leak[i]``, the
    map's context leakage against the union of its GT boxes (:func:`leakage_share`), computed while
    the map is still in the cache (a second pass over the maps later read them from memory again)."""
    h = maps.shape[1]
    w = maps.shape[2]
    q = np.empty((h, w), dtype=np.uint8)
    hist = np.empty((4, 256), dtype=np.int64)
    region = np.empty((h, w), dtype=np.uint8)
    ws = workspace(h, w)
    for i in range(first, stop):
        top, lo = _quantize(maps[i], q, hist)
        valid[i] = top >= 0
        if top < 0:
            continue
        gt = gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]
        if with_leak:  # the map is valid: finite, its minimum known
            _boxes_region(gt, region)
            leak[i] = _leakage_of(maps[i].ravel(), region.ravel(), lo)
        levels[i] = box_ious(q, hist, top, thresholds, gt, out_single[i], out_multi[i], flags[i], with_holes, ws)


@njit(cache=True, nogil=True)
def mask_histograms(scoremap, mask, edges, fg_hist, bg_hist):
    """Add the scores of foreground (mask == 1) and background (mask == 0) pixels to histograms
    over ``edges`` (bins ``[e_i, e_i+1)``, the last one closed, as ``np.histogram``); ignored
    pixels (any other value) count nowhere. Scores must lie in [edges[0], edges[-1]]."""
    nb = edges.shape[0] - 1
    step = (edges[nb - 2] - edges[0]) / max(nb - 2, 1) if nb > 2 else 1.0
    flat = scoremap.ravel()
    labels = mask.ravel()
    for i in range(flat.shape[0]):
        m = labels[i]
        if m > 1:
            continue
        v = flat[i]
        b = int((v - edges[0]) / step) if step > 0 else 0
        b = min(max(b, 0), nb - 1)
        while b > 0 and edges[b] > v:
            b -= 1
        while b < nb - 1 and edges[b + 1] <= v:
            b += 1
        if m == 1:
            fg_hist[b] += 1
        else:
            bg_hist[b] += 1


@njit(cache=True, nogil=True, inline="always")
def _lane(v, r, t, o):
    """One pixel into its lane's sums (``v >= 0``: ``v * 0.0`` adds +0.0, which changes no sum)."""
    return t + v * np.float64(r <= 1), o + v * np.float64(r == 0)


@njit(cache=True, nogil=True, inline="always")
def _leakage(flat, labels):
    """The share of ``flat``'s mass (above its minimum) where ``labels`` is 0, among labels 0 and 1 (any
    other label ignored); NaN when a value is NaN or infinite; a flat map counts as uniform.

    Why eight lanes: one running sum is a chain of dependent additions, four cycles each, and cost
    as much as the box kernel's foreground pass; pixel ``i`` goes to lane ``i % 8`` (eight scalars, kept
    in registers) and the lanes are added pairwise at the end, an order fixed by this code (not by the
    compiler's vectoriser), so every build gives the same bits. The minimum is exact in any order."""
    n = flat.shape[0]
    bad = 0
    lo = np.inf
    for i in range(n):
        v = flat[i]
        bad += np.int64(not (abs(v) < np.inf))  # NaN fails the comparison too
        lo = min(lo, v)
    if bad:
        return np.nan
    return _leakage_of(flat, labels, lo)


@njit(cache=True, nogil=True, inline="always")
def _leakage_of(flat, labels, lo):
    """:func:`_leakage` of a finite map whose minimum is ``lo``. The label counts are needed only for a
    flat map, so they are counted only then."""
    n = flat.shape[0]
    m = n - n % 8
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    o0 = o1 = o2 = o3 = o4 = o5 = o6 = o7 = 0.0
    for i in range(0, m, 8):
        t0, o0 = _lane(flat[i] - lo, labels[i], t0, o0)
        t1, o1 = _lane(flat[i + 1] - lo, labels[i + 1], t1, o1)
        t2, o2 = _lane(flat[i + 2] - lo, labels[i + 2], t2, o2)
        t3, o3 = _lane(flat[i + 3] - lo, labels[i + 3], t3, o3)
        t4, o4 = _lane(flat[i + 4] - lo, labels[i + 4], t4, o4)
        t5, o5 = _lane(flat[i + 5] - lo, labels[i + 5], t5, o5)
        t6, o6 = _lane(flat[i + 6] - lo, labels[i + 6], t6, o6)
        t7, o7 = _lane(flat[i + 7] - lo, labels[i + 7], t7, o7)
    for i in range(m, n):
        t0, o0 = _lane(flat[i] - lo, labels[i], t0, o0)
    total = ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))
    outside = ((o0 + o1) + (o2 + o3)) + ((o4 + o5) + (o6 + o7))
    if total <= 0.0:
        n_valid = 0
        n_outside = 0
        for i in range(n):
            r = labels[i]
            n_valid += np.int64(r <= 1)
            n_outside += np.int64(r == 0)
        return n_outside / max(n_valid, 1)
    return outside / total


@njit(cache=True, nogil=True)
def leakage_share(scoremap, region):
    """:func:`~kdcicam.evaluation.metrics.leakage` in one compiled pass: the share of the map's mass
    (above its minimum) outside the object. ``region``: 1 object, 0 background, any other value
    ignored (the minimum is taken over the whole map, as there). A flat map counts as uniform; a
    map with NaN or inf gives NaN. Summed in eight lanes (:func:`_leakage`): equal to the numpy
    definition up to rounding."""
    return _leakage(scoremap.ravel(), region.ravel())


@njit(cache=True, nogil=True, inline="always")
def _boxes_region(gt, region):
    """``region`` (h x w uint8) = 1 inside any of the boxes ``gt [k, 4]`` (inclusive pixels, clipped to
    the map), 0 elsewhere: :func:`~kdcicam.evaluation.masks.boxes_mask`."""
    h, w = region.shape
    region[:, :] = 0
    for g in range(gt.shape[0]):
        for y in range(max(gt[g, 1], 0), min(gt[g, 3] + 1, h)):
            for x in range(max(gt[g, 0], 0), min(gt[g, 2] + 1, w)):
                region[y, x] = 1
