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

When the largest component is not certain (two components tied, or holes make the area bound
inconclusive) the threshold is flagged and the caller traces it with ``cv2.findContours``. The
property tests compare every threshold with the plain loop.
"""
from __future__ import annotations

import numpy as np
from numba import njit

FLAG_SINGLE = 1  #: the single-contour answer at this threshold needs the plain findContours
FLAG_MULTI = 2   #: the multi-contour answer at this threshold needs the plain findContours
#: one plain findContours costs about as much as this many pixels of the background pass, so
#: sparse high thresholds with holes are traced rather than paid for with the whole pass
_TRACE_PIXELS = 4000

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
        tl, tr, bl, br = bits
        if sum(bits) == 2 and tl == br:
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


_NONE = np.uint32(0xFFFFFFFF)  #: "not in the set" in a parent array


@njit(cache=True, nogil=True, inline="always")
def _find(parent, a):
    """Root of ``a``, with path halving when the path is longer than one step (most pixels point
    straight at their root: no store then). Indices are unsigned: numba then skips the
    negative-index wrap-around check, which costs as much as the rest of this loop."""
    r = np.uint64(parent[np.uint64(a)])
    if np.uint64(parent[r]) == r:
        return r
    a = r
    while np.uint64(parent[a]) != a:
        parent[a] = parent[parent[a]]
        a = np.uint64(parent[a])
    return a


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
        if iou > best:
            best = iou
    return best


@njit(cache=True, nogil=True)
def quantize(scoremap, q):
    """``q = uint8(map * 255)`` (truncation, as numpy's cast); returns False, leaving ``q``
    unspecified, when a value is NaN, infinite or outside [0, 1]."""
    flat = scoremap.ravel()
    out = q.ravel()
    bad = False
    for i in range(flat.shape[0]):
        v = flat[i]
        bad |= not (v >= 0.0 and v <= 1.0)  # NaN fails both comparisons
    if bad:
        return False
    for i in range(flat.shape[0]):
        out[i] = np.uint8(flat[i] * 255.0)
    return True


@njit(cache=True, nogil=True)
def threshold_levels(q, thresholds):
    """``int(t * max(q))`` per threshold, as the protocol computes ``cv2.threshold``'s ``thresh``."""
    top = 0
    for v in q.ravel():
        if v > top:
            top = v
    levels = np.empty(thresholds.shape[0], dtype=np.int64)
    for t in range(thresholds.shape[0]):
        levels[t] = np.int64(thresholds[t] * np.float64(top))
    return levels


@njit(cache=True, nogil=True)
def _band_order(q, levels):
    """Pixels grouped by the threshold at which they turn foreground (counting sort, raster order
    inside a group), packed as ``(y << 16) | x``, and the groups' starts.

    Group ``b`` holds the pixels that enter the foreground at threshold index ``nt - 1 - b`` (the
    highest index whose level lies below the pixel's grey level); group ``nt`` holds those that
    never do. A pixel of group ``b`` turns background, going up, at threshold ``nt - b``.

    Smooth maps put long runs of pixels in the same group, so the histogram is split four ways and
    the fill pointer stays in a register along a run (a read-modify-write chain on one address
    costs several cycles per pixel)."""
    h, w = q.shape
    nt = levels.shape[0]
    band = np.empty(256, dtype=np.int64)
    t = nt - 1
    for v in range(255, -1, -1):
        while t >= 0 and levels[t] >= v:
            t -= 1
        band[v] = nt - 1 - t  # t = -1: never foreground -> group nt
    hist = np.zeros((4, 256), dtype=np.int64)
    qf = q.ravel()
    n = qf.shape[0]
    for i in range(0, n - 3, 4):
        hist[0, qf[i]] += 1
        hist[1, qf[i + 1]] += 1
        hist[2, qf[i + 2]] += 1
        hist[3, qf[i + 3]] += 1
    for i in range(n - n % 4, n):
        hist[0, qf[i]] += 1
    count = np.zeros(nt + 1, dtype=np.int64)
    for v in range(256):
        count[band[v]] += hist[0, v] + hist[1, v] + hist[2, v] + hist[3, v]
    start = np.empty(nt + 2, dtype=np.int64)
    acc = 0
    for b in range(nt + 1):
        start[b] = acc
        acc += count[b]
    start[nt + 1] = acc
    fill = start.copy()
    order = np.empty(n, dtype=np.int32)
    for y in range(h):
        cur = -1
        ptr = 0
        for x in range(w):
            b = band[q[y, x]]
            if b != cur:
                if cur >= 0:
                    fill[cur] = ptr
                cur = b
                ptr = fill[b]
            order[ptr] = (y << 16) | x
            ptr += 1
        if cur >= 0:
            fill[cur] = ptr
    return order, start


@njit(cache=True, nogil=True)
def _foreground_pass(shape, order, start, gt, out_single, out_multi, flags, holes):
    """Top-down union-find over the foreground. Fills the single-contour IoU (or a flag), the best
    IoU over component boxes, and the number of holes, per threshold."""
    h, w = shape
    nt = start.shape[0] - 2
    pw = w + 2
    upw = np.uint64(pw)
    one = np.uint64(1)
    npad = (h + 2) * pw
    offs = np.empty(8, dtype=np.uint64)
    for i in range(8):
        offs[i] = np.uint64(_NDY[i] * pw + _NDX[i])  # negative offsets wrap, and so does the sum

    fg = np.zeros(npad, dtype=np.uint8)
    lab = np.empty(npad, dtype=np.uint32)  # parent pointers, valid where fg
    rank = np.empty(npad, dtype=np.uint8)
    bx0 = np.empty(npad, dtype=np.int32)
    by0 = np.empty(npad, dtype=np.int32)
    bx1 = np.empty(npad, dtype=np.int32)
    by1 = np.empty(npad, dtype=np.int32)
    area2 = np.empty(npad, dtype=np.int64)
    pos = np.empty(npad, dtype=np.int32)
    live = np.empty(start[nt] + 1, dtype=np.uint64)
    nlive = 0
    euler4 = 0
    empty_iou = _best_iou(0, 0, 0, 0, gt)
    # area changes of consecutive pixels joining the same root are summed in a register
    pend_root = np.uint64(0)
    pend_area = 0
    last_p = np.uint64(0)  # the previous pixel; its component is pend_root

    for b in range(nt):
        t = nt - 1 - b
        if b > 0 and start[b + 1] == start[b]:  # same binary map as the previous threshold
            out_single[t] = out_single[t + 1]
            out_multi[t] = out_multi[t + 1]
            flags[t] = flags[t + 1]
            holes[t] = holes[t + 1]
            continue
        for i in range(start[b], start[b + 1]):
            y = np.int64(order[i] >> 16)
            x = np.int64(order[i] & 0xFFFF)
            p = np.uint64((y + 1) * pw + x + 1)
            a = p - upw
            c = p + upw
            mask = (np.int64(fg[a - one]) | (np.int64(fg[a]) << 1) | (np.int64(fg[a + one]) << 2)
                    | (np.int64(fg[p - one]) << 3) | (np.int64(fg[p + one]) << 4)
                    | (np.int64(fg[c - one]) << 5) | (np.int64(fg[c]) << 6) | (np.int64(fg[c + one]) << 7))
            fg[p] = 1
            euler4 += _DEULER4[mask]
            ng = _NGROUPS[mask]
            if ng == 0:
                r = p
                lab[p] = np.uint32(p)
                rank[p] = 0
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                area2[p] = 0
                pos[p] = nlive
                live[nlive] = p
                nlive += 1
            elif ng == 1 and (mask & 8) != 0 and p - one == last_p:
                # one group holding the left neighbour, which was the previous pixel: no find
                r = pend_root
                lab[p] = np.uint32(r)
                if x > bx1[r]:
                    bx1[r] = x
                if y < by0[r] or y > by1[r]:
                    by0[r] = min(by0[r], y)
                    by1[r] = max(by1[r], y)
            else:
                r = _find(lab, p + offs[_REPS[mask, 0]])
                for g in range(1, ng):
                    rb = _find(lab, p + offs[_REPS[mask, g]])
                    if rb == r:
                        continue
                    if rank[r] < rank[rb]:
                        r, rb = rb, r
                    elif rank[r] == rank[rb]:
                        rank[r] += 1
                    if pend_root == rb or pend_root == r:  # flush before the stats move
                        area2[pend_root] += pend_area
                        pend_area = 0
                    lab[rb] = np.uint32(r)
                    bx0[r] = min(bx0[r], bx0[rb])
                    by0[r] = min(by0[r], by0[rb])
                    bx1[r] = max(bx1[r], bx1[rb])
                    by1[r] = max(by1[r], by1[rb])
                    area2[r] += area2[rb]
                    j = pos[rb]
                    last = live[nlive - 1]
                    live[j] = last
                    pos[last] = j
                    nlive -= 1
                lab[p] = np.uint32(r)
                if x < bx0[r] or x > bx1[r] or y < by0[r] or y > by1[r]:
                    bx0[r] = min(bx0[r], x)
                    bx1[r] = max(bx1[r], x)
                    by0[r] = min(by0[r], y)
                    by1[r] = max(by1[r], y)
            if r != pend_root:
                area2[pend_root] += pend_area
                pend_root = r
                pend_area = 0
            pend_area += _DAREA2[mask]
            last_p = p
        area2[pend_root] += pend_area
        pend_area = 0

        flags[t] = 0
        holes[t] = nlive - euler4 // 4
        if nlive == 0:
            out_single[t] = empty_iou
            out_multi[t] = empty_iou
            continue
        best_multi = 0.0
        winner = live[0]
        for j in range(nlive):
            r = live[j]
            iou = _best_iou(bx0[r], by0[r], min(bx1[r] + 1, w - 1), min(by1[r] + 1, h - 1), gt)
            if iou > best_multi:
                best_multi = iou
            if area2[r] > area2[winner]:
                winner = r
        out_multi[t] = best_multi
        if nlive > 1:
            runner_up = -1  # the largest area (bound) among the others
            for j in range(nlive):
                r = live[j]
                if r == winner:
                    continue
                bound = area2[r]
                if holes[t] > 0:  # filled area <= polygon through the bounding box's corner centres
                    bound = 2 * (bx1[r] - bx0[r]) * (by1[r] - by0[r])
                if bound > runner_up:
                    runner_up = bound
            if runner_up >= area2[winner]:
                flags[t] = FLAG_SINGLE
                out_single[t] = 0.0
                continue
        out_single[t] = _best_iou(bx0[winner], by0[winner], min(bx1[winner] + 1, w - 1),
                                  min(by1[winner] + 1, h - 1), gt)


@njit(cache=True, nogil=True)
def _background_pass(shape, order, start, gt, holes, hole_iou, t_max):
    """Bottom-up union-find over the background (4-connectivity; the image frame is one outside
    component). Fills the best IoU over hole boxes at every threshold up to ``t_max`` that has
    holes."""
    h, w = shape
    nt = start.shape[0] - 2
    if t_max < 0:
        return
    pw = w + 2
    npad = (h + 2) * pw

    lab = np.full(npad, _NONE, dtype=np.uint32)
    rank = np.zeros(npad, dtype=np.uint8)
    bx0 = np.empty(npad, dtype=np.int32)
    by0 = np.empty(npad, dtype=np.int32)
    bx1 = np.empty(npad, dtype=np.int32)
    by1 = np.empty(npad, dtype=np.int32)
    pos = np.empty(npad, dtype=np.int32)
    live = np.empty(order.shape[0] - start[nt - t_max] + 2, dtype=np.uint64)
    # the frame: one component rooted at padded index 0, never a hole
    for x in range(pw):
        lab[x] = 0
        lab[(h + 1) * pw + x] = 0
    for y in range(h + 2):
        lab[y * pw] = 0
        lab[y * pw + w + 1] = 0
    rank[0] = 255
    pos[0] = 0
    live[0] = 0
    nlive = 1
    offs = np.empty(4, dtype=np.uint64)
    offs[0] = np.uint64(-pw)
    offs[1] = np.uint64(-1)
    offs[2] = np.uint64(1)
    offs[3] = np.uint64(pw)

    for t in range(t_max + 1):
        b = nt - t  # the group that turns background at threshold t
        for i in range(start[b], start[b + 1]):
            y = np.int64(order[i] >> 16)
            x = np.int64(order[i] & 0xFFFF)
            p = np.uint64((y + 1) * pw + x + 1)
            r = p
            for k in range(4):
                nb = p + offs[k]
                if lab[nb] == _NONE:
                    continue
                rb = _find(lab, nb)
                if r == p:
                    r = rb
                    continue
                if rb == r:
                    continue
                if rank[r] < rank[rb]:
                    r, rb = rb, r
                elif rank[r] == rank[rb]:
                    rank[r] += 1
                lab[rb] = np.uint32(r)
                bx0[r] = min(bx0[r], bx0[rb])
                by0[r] = min(by0[r], by0[rb])
                bx1[r] = max(bx1[r], bx1[rb])
                by1[r] = max(by1[r], by1[rb])
                j = pos[rb]
                last = live[nlive - 1]
                live[j] = last
                pos[last] = j
                nlive -= 1
            lab[p] = np.uint32(r)
            if r == p:
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                pos[p] = nlive
                live[nlive] = p
                nlive += 1
            elif x < bx0[r] or x > bx1[r] or y < by0[r] or y > by1[r]:
                bx0[r] = min(bx0[r], x)
                bx1[r] = max(bx1[r], x)
                by0[r] = min(by0[r], y)
                by1[r] = max(by1[r], y)
        if holes[t] > 0:
            outside = _find(lab, 0)
            best = 0.0
            for j in range(nlive):
                r = live[j]
                if r == outside:
                    continue
                iou = _best_iou(bx0[r] - 1, by0[r] - 1, min(bx1[r] + 2, w - 1), min(by1[r] + 2, h - 1), gt)
                if iou > best:
                    best = iou
            hole_iou[t] = best


@njit(cache=True, nogil=True)
def _background_extent(levels, start, holes):
    """Highest threshold index the background pass should reach: beyond it, thresholds with holes
    are cheaper to trace one by one than to extend the pass (-1: no pass)."""
    nt = levels.shape[0]
    traced = 0  # distinct levels with holes above the candidate cut
    last_level = -1
    for t in range(nt - 1, -1, -1):
        if holes[t] > 0 and levels[t] != last_level:
            traced += 1
            last_level = levels[t]
    best_t = -1
    best_cost = traced * _TRACE_PIXELS
    last_level = -1
    total = start[nt + 1]
    for t in range(nt):
        if holes[t] > 0 and levels[t] != last_level:
            traced -= 1
            last_level = levels[t]
            background = total - start[nt - t]  # pixels of groups nt - t .. nt
            cost = background + traced * _TRACE_PIXELS
            if cost < best_cost:
                best_cost = cost
                best_t = t
    return best_t


@njit(cache=True, nogil=True)
def box_ious(q, thresholds, gt, out_single, out_multi, flags, with_holes):
    """Best IoU per threshold of the single-contour box (``out_single``) and of all contour boxes
    (``out_multi``; holes' boxes left out unless ``with_holes``). Where ``flags`` has FLAG_SINGLE
    or FLAG_MULTI, the caller must trace that threshold. Returns the thresholds' grey levels."""
    levels = threshold_levels(q, thresholds)
    nt = levels.shape[0]
    order, start = _band_order(q, levels)
    holes = np.zeros(nt, dtype=np.int64)
    _foreground_pass(q.shape, order, start, gt, out_single, out_multi, flags, holes)
    if with_holes:
        t_cut = _background_extent(levels, start, holes)
        hole_iou = np.zeros(nt, dtype=np.float64)
        _background_pass(q.shape, order, start, gt, holes, hole_iou, t_cut)
        for t in range(nt):
            if holes[t] == 0:
                continue
            if t > t_cut:
                flags[t] |= FLAG_MULTI
            elif hole_iou[t] > out_multi[t]:
                out_multi[t] = hole_iou[t]
    return levels


@njit(cache=True, nogil=True)
def batch_box_ious(maps, thresholds, gt_boxes, gt_offsets, first, stop, out_single, out_multi, flags,
                   levels, valid, with_holes):
    """``box_ious`` for images ``first .. stop - 1`` of ``maps [B, H, W]`` (float64); the GT boxes
    of image ``i`` are ``gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]``. ``valid[i]`` is False for a map
    with a value outside [0, 1] (its rows are left untouched)."""
    h = maps.shape[1]
    w = maps.shape[2]
    q = np.empty((h, w), dtype=np.uint8)
    for i in range(first, stop):
        if not quantize(maps[i], q):
            valid[i] = False
            continue
        valid[i] = True
        gt = gt_boxes[gt_offsets[i]:gt_offsets[i + 1]]
        levels[i] = box_ious(q, thresholds, gt, out_single[i], out_multi[i], flags[i], with_holes)


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
