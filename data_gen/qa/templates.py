"""Phrasings for every address-QA turn type.

Why many phrasings: a chat model tuned on one fixed question learns the string, not the
task. Every answer template embeds the address *verbatim* (``{sub_street}``, ``{street}``,
...) so :func:`data_gen.qa.parse.parse_answer_to_candidate` can map generated text back
to a candidate. Yes/no answers always start with "Yes" or "No" (stats and evals read the
first word), and "No" answers name the true address *before* the wrong one so that a
first-mention parser picks the true one.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"

WHERE_Q = (
    "Where was this photo taken?",
    "What is the address of this place?",
    "Can you tell me where this street view was captured?",
    "Which street segment is shown in this image?",
    "Where am I? Give the street address.",
    "Identify the location of this picture as precisely as you can.",
    "On which stretch of road was this picture taken?",
)
WHERE_A = (
    "This photo was taken on {sub_street}.",
    "It was taken on {sub_street}.",
    "The address is {sub_street}.",
    "This is {sub_street}.",
    "This street view shows {sub_street}.",
    "You are on {sub_street}.",
)
WHERE_A_DISTRICT = (
    "This photo was taken on {sub_street}, in {district_phrase}.",
    "It is {sub_street}, in {district_phrase}.",
    "The address is {sub_street} ({district_phrase}).",
)

STREET_Q = (
    "Which street is this?",
    "What street was this picture taken on?",
    "Name the street in this photo.",
    "What is the name of this road?",
    "Which road are we looking at here?",
    "Tell me just the street name for this image.",
)
STREET_A = (
    "This is {street}.",
    "The street is {street}.",
    "It was taken on {street}.",
    "This photo shows {street}.",
    "We are on {street}.",
)

DISTRICT_Q = (
    "Which district is this in?",
    "What neighbourhood was this photo taken in?",
    "In which part of the city is this street?",
    "Name the district shown in this picture.",
    "Which area of town is this?",
    "What district does this location belong to?",
)
DISTRICT_A = (
    "This is in {district_phrase}.",
    "It was taken in {district_phrase}.",
    "The photo shows a street in {district_phrase}.",
    "This location belongs to {district_phrase}.",
)

CROSS_Q = (
    "Between which two cross streets was this taken?",
    "Which cross streets bound this block?",
    "What are the nearest intersecting streets on either side?",
    "Name the two streets that cross this road at the ends of this block.",
    "This block runs between which two streets?",
    "Which intersections lie at both ends of this stretch?",
)
CROSS_A = (
    "It lies between {from_street} and {to_street}.",
    "The cross streets are {from_street} and {to_street}.",
    "This block of {street} runs between {from_street} and {to_street}.",
    "It is bounded by {from_street} on one side and {to_street} on the other.",
    "The nearest intersections are with {from_street} and {to_street}.",
)

YES_NO_Q = (
    "Was this photo taken on {candidate}?",
    "Is this {candidate}?",
    "Could this be {candidate}?",
    "Am I on {candidate} here?",
    "Is the address of this place {candidate}?",
    "Someone says this is {candidate}. Are they right?",
)
YES_A = (
    "Yes, this is {sub_street}.",
    "Yes. It was taken on {sub_street}.",
    "Yes, that's right: {sub_street}.",
    "Yes, the photo shows {sub_street}.",
)
NO_A = (
    "No, it was taken on {sub_street}, not {candidate}.",
    "No. This is {sub_street}; {candidate} is nearby but not it.",
    "No, the correct address is {sub_street}.",
    "No, this photo shows {sub_street} instead.",
)

MC_Q = (
    "Which of these addresses matches the photo?",
    "Pick the correct location for this image.",
    "Where was this taken? Choose one option.",
    "Select the street segment shown in the picture.",
    "One of the following is the address of this place. Which one?",
    "Choose the address where this street view was captured.",
)
MC_OPTION = "{letter}. {address}"
MC_A = (
    "{letter}. {sub_street}",
    "{letter}: {sub_street}",
    "The answer is {letter}, {sub_street}.",
    "Option {letter}: {sub_street}.",
)
MC_LETTERS = "ABCD"

NEARBY_Q = (
    "Which other candidate addresses are near the place in this photo?",
    "List the nearby addresses this location could be confused with.",
    "Name the {k} closest other street segments to where this was taken.",
    "What addresses are next to this spot, closest first?",
    "Give me {k} nearby alternatives to this location.",
    "Which neighbouring blocks are closest to this one?",
)
NEARBY_A_HEAD = (
    "The nearest other addresses, closest first:",
    "Closest candidate addresses nearby:",
    "Nearby addresses, ordered by distance:",
    "These are the closest other street segments:",
)

# Grounded turns (candidates in the question, data_gen/qa/prompt.py): the answer names the
# chosen candidate verbatim; when none is right, it says so (prompt.NONE_FITS) and names the place.
# ONE opening for "a candidate fits": the first answer token is then the decision itself (this
# opening vs NONE_FITS). With four openings each held ~17 % of grounded turns against NONE_FITS's
# ~34 %, and greedy decoding opened every test answer with NONE_FITS and then named a place
# outside the list (measured: 355 of 355 test answers, docs/llava_answers.md).
GROUNDED_A = (
    "This photo was taken on {sub_street}.",
)
GROUNDED_NONE_A = (
    "This photo was taken on {sub_street}.",
    "It looks like {sub_street}.",
)

REFINE_Q = (
    "Can you be more precise?",
    "Which part of {street} exactly?",
    "Could you narrow it down to the block?",
    "More precisely, where on that street?",
    "Can you give the exact stretch of road?",
    "And between which streets on {street}?",
)
REFINE_A = (
    "More precisely, it was taken on {sub_street}.",
    "It is {sub_street}.",
    "The exact stretch is {sub_street}.",
    "To be precise: {sub_street}.",
    "This is {sub_street}.",
)

ALIGN_Q = (
    "Describe where this photo was taken.",
    "Give the address of this street view.",
    "Where is this?",
    "Describe the location shown in the image.",
    "What place does this picture show?",
    "Say where this image was captured.",
)
ALIGN_A = (
    "This photo was taken on {sub_street}.",
    "A street view of {sub_street}.",
    "This is {sub_street}.",
)
ALIGN_A_DISTRICT = (
    "This photo was taken on {sub_street}, in {district_phrase}.",
    "A street view of {sub_street} in {district_phrase}.",
    "This is {sub_street} in {district_phrase}.",
)


def district_phrase(district: str) -> str:
    """'Mission' -> 'the Mission district'; names already ending in 'district' stay as they are."""
    if district.lower().endswith("district"):
        return f"the {district}" if not district.lower().startswith("the ") else district
    return f"the {district} district"


# ---- conversation beyond the address: what the photo shows (from its caption) and what it cannot show.
# Time-of-day answers name the renderer's own phrase ({when}: "at night", "in daylight", ...) and
# weather answers one of data_gen.qa.scene.WEATHER_WORDS, so scoring parses them back.
TIME_Q = (
    "Is it day or night in this photo?",
    "What time of day was this photo taken?",
    "Was this picture taken at night?",
    "Is it daytime or night here?",
    "When during the day was this taken?",
    "Is it dark in this photo?",
)
TIME_A = (
    "It was taken {when}.",
    "This photo was taken {when}.",
)
TIME_NIGHT_YES_A = ("Yes, it was taken at night.",)
TIME_NIGHT_NO_A = ("No, it was taken {when}.",)
NIGHT_QUESTIONS = ("Was this picture taken at night?", "Is it dark in this photo?")
WEATHER_Q = (
    "What is the weather like in this photo?",
    "What was the weather when this was taken?",
    "Is it raining here?",
    "How is the weather?",
    "Describe the weather in this picture.",
)
WEATHER_A = {
    "clear": ("The weather is clear and dry.", "It is dry, with no rain, fog or snow."),
    "rain": ("It is raining.", "The weather is wet: it is raining."),
    "fog": ("It is foggy.", "There is fog."),
    "snow": ("It is snowing.", "There is snow."),
}
SCENE_Q = (
    "What do you see in this photo?",
    "Describe this picture.",
    "What does this street look like?",
    "Describe the scene.",
)
SCENE_A = (
    "I see {caption}.",
    "The photo shows {caption}.",
)
CITY_Q = (
    "What city is this?",
    "Which city was this photo taken in?",
    "In which city is this street?",
)
CITY_A = (
    "This is {city}.",
    "The photo was taken in {city}.",
)
UNKNOWN_Q = (
    "What is the house number of the building in front?",
    "Who took this photo?",
    "What year was this photo taken?",
    "What is the name of the person walking here?",
    "How much does an apartment here cost?",
    "What is the phone number of the shop?",
)
UNKNOWN_A = (
    "I can't tell that from this photo.",
    "That is not something I can tell from this picture.",
)
