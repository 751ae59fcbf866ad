"""SynthCity: offline street-view-like benchmark images whose look varies smoothly with location.

    city = SynthCity(seed=0, bounds=network.bounds)
    ctx = city.view(x, y, dx, dy, street="Main St", highway="residential", district="")
    image, caption = render_view(ctx, np.random.default_rng(0), size=96)
"""

from data_gen.synthcity.city import ROAD_WIDTH_M, SynthCity, ViewContext
from data_gen.synthcity.draw import colour_name, render_view
from data_gen.synthcity.fields import STYLES, DistrictStyle, SmoothField

__all__ = ["SynthCity", "ViewContext", "render_view", "colour_name", "SmoothField", "DistrictStyle",
           "STYLES", "ROAD_WIDTH_M"]
