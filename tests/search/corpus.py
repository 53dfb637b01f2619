"""The relevance corpus: 30 memories, 300 messages, and queries with their expected top
results. Each memory has a few messages that carry its topic and filler chat that says
nothing searchable, so that a query has one right answer among many plausible texts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Doc:
    key: str
    title: str
    description: str
    tags: tuple[str, ...]
    messages: tuple[str, ...]
    category: str = "Personal"


@dataclass(frozen=True)
class Case:
    query: str
    top: str  # the memory expected first ("a|b": either, when both match as well)
    message: str | None = None  # a fragment of the message expected first in it
    mode: str = "text"
    kind: str = ""
    also: tuple[str, ...] = field(default_factory=tuple)  # expected in the top 3 as well


FILLER = (
    "ok",
    "sounds good",
    "see you then",
    "thanks!",
    "haha yes",
    "sure, why not",
    "let me check and get back to you",
    "perfect",
    "will do",
    "talk later",
    "on my way",
    "yes please",
    "no worries",
    "good night",
    "I agree",
    "that works for me",
    "can't wait",
    "done",
    "great, thank you",
    "maybe next week",
)

DOCS: tuple[Doc, ...] = (
    Doc(
        "lisbon",
        "Lisbon weekend",
        "Trip to Portugal in May",
        ("travel", "portugal"),
        (
            "We rode tram 28 up to the castle and the view over the river was amazing",
            "Pastéis de nata at the bakery near the monastery, best custard tarts ever",
            "The fado singer in Alfama made everyone cry",
            "Our hotel was on a steep hill, my legs hurt from all the climbing",
        ),
        "Travel",
    ),
    Doc(
        "bus",
        "Commute notes",
        "Daily commute",
        ("commute",),
        (
            "There were 28 people waiting for the tram this morning, I took the bus instead",
            "The bus driver skipped my stop again",
            "Bought a monthly pass, cheaper than single tickets",
        ),
    ),
    Doc(
        "dentist",
        "Dentist appointment",
        "Check-up and cleaning",
        ("health",),
        (
            "The dentist said I need a filling in the lower left molar",
            "Appointment moved to Thursday at 3pm",
            "Remember to floss every evening, the hygienist insisted",
        ),
        "Health",
    ),
    Doc(
        "vaccine",
        "Kids vaccinations",
        "Vaccination schedule",
        ("health", "kids"),
        (
            "Emma gets her measles vaccination booster next month",
            "The pediatrician recommended the flu shot for both children",
            "Bring the vaccination booklet to the clinic",
        ),
        "Health",
    ),
    Doc(
        "lasagna",
        "Grandma's lasagna",
        "Family recipe",
        ("food", "recipe"),
        (
            "Grandma's lasagna recipe: layer the pasta sheets with ragù and béchamel",
            "Bake it for forty minutes at 180 degrees, then let it rest",
            "She always added a pinch of nutmeg to the white sauce",
        ),
        "Food",
    ),
    Doc(
        "sourdough",
        "Sourdough experiments",
        "Bread baking",
        ("food", "baking"),
        (
            "Fed the sourdough starter twice today, it doubled in four hours",
            "The loaf came out dense, I should let the dough proof longer",
            "Scored the bread with a razor blade before baking",
        ),
        "Food",
    ),
    Doc(
        "marathon",
        "Marathon training",
        "Spring marathon plan",
        ("sport", "running"),
        (
            "I run every morning before work, ten kilometres today",
            "Long run on Sunday: 30 km at an easy pace",
            "Bought new running shoes, the old ones gave me blisters",
        ),
        "Health",
    ),
    Doc(
        "guitar",
        "Learning guitar",
        "Lessons with Paul",
        ("music",),
        (
            "Practised the F barre chord for an hour, my fingers are sore",
            "Paul taught me the intro of Wonderwall",
            "Need new strings, the high E snapped",
        ),
        "Personal",
    ),
    Doc(
        "moving",
        "Moving house",
        "New flat in September",
        ("home",),
        (
            "Booked the removal van for the 14th of September",
            "We need forty cardboard boxes and lots of packing tape",
            "The landlord will return the deposit after the inspection",
        ),
        "Personal",
    ),
    Doc(
        "garden",
        "Balcony garden",
        "Herbs and tomatoes",
        ("home", "plants"),
        (
            "The tomato plants finally have flowers",
            "Basil is growing like crazy, made pesto with it",
            "Aphids on the roses again, sprayed them with soapy water",
        ),
        "Personal",
    ),
    Doc(
        "wedding",
        "Anna and Tom's wedding",
        "June wedding",
        ("family", "events"),
        (
            "The ceremony is at the old chapel by the lake",
            "I'm giving a toast at the reception, need to write the speech",
            "Gift idea: a hand-made photo album of their travels",
        ),
        "Family",
    ),
    Doc(
        "birthday",
        "Leo's birthday party",
        "He turns six",
        ("kids", "events"),
        (
            "Leo wants a dinosaur cake with green icing",
            "Invited twelve children from his class",
            "Rent the bouncy castle for the garden",
        ),
        "Family",
    ),
    Doc(
        "laptop",
        "Laptop repair",
        "Screen issue",
        ("tech",),
        (
            "The laptop screen flickers when I open the lid past ninety degrees",
            "Repair shop quoted 180 euros for a new display cable",
            "Backed up all photos to the external drive before handing it over",
        ),
        "Work",
    ),
    Doc(
        "project",
        "Q3 project kickoff",
        "Analytics dashboard",
        ("work",),
        (
            "Kickoff meeting with the analytics team on Monday",
            "The dashboard must show weekly active users and churn",
            "Deadline for the first prototype is end of August",
        ),
        "Work",
    ),
    Doc(
        "tax",
        "Tax return",
        "Deadline in April",
        ("admin", "money"),
        (
            "Collect the receipts for charitable donations",
            "The accountant needs the mortgage interest statement",
            "Filed the tax return online, expecting a refund",
        ),
        "Finance",
    ),
    Doc(
        "car",
        "Car service",
        "Annual inspection",
        ("car",),
        (
            "The mechanic replaced the brake pads and the windscreen wipers",
            "Tyre pressure warning light came on again on the motorway",
            "Service booked at the garage on Friday morning",
        ),
        "Personal",
    ),
    Doc(
        "cat",
        "Milo the cat",
        "Vet visits",
        ("pets",),
        (
            "Milo has been sneezing all week, the vet prescribed antibiotics",
            "He hides under the sofa whenever the doorbell rings",
            "Switched him to grain-free kibble",
        ),
        "Personal",
    ),
    Doc(
        "book",
        "Book club",
        "Monthly reading",
        ("books",),
        (
            "This month we read One Hundred Years of Solitude",
            "Maria thinks the ending of the novel was too abrupt",
            "Next meeting at the library café, bring snacks",
        ),
        "Personal",
    ),
    Doc(
        "ski",
        "Ski trip",
        "Alps in February",
        ("travel", "winter"),
        (
            "Fresh powder on the slopes, skied until the lifts closed",
            "Rented skis and boots at the shop next to the chalet",
            "Hot chocolate at the mountain hut after the black run",
        ),
        "Travel",
    ),
    Doc(
        "japan",
        "Japan itinerary",
        "Two weeks in autumn",
        ("travel", "japan"),
        (
            "Take the shinkansen from Tokyo to Kyoto, it only takes two hours",
            "Visit the Fushimi Inari shrine early to avoid the crowds",
            "Book a ryokan with an onsen in Hakone",
        ),
        "Travel",
    ),
    Doc(
        "concert",
        "Concert tickets",
        "Stadium show",
        ("music", "events"),
        (
            "Got two tickets for the stadium concert in July",
            "The band plays their whole first album",
            "Doors open at 6pm, the support act starts at 7",
        ),
        "Personal",
    ),
    Doc(
        "insurance",
        "Home insurance",
        "Claim for the leak",
        ("home", "money"),
        (
            "Water leaked from the upstairs flat into our kitchen ceiling",
            "The insurance adjuster comes on Tuesday to assess the damage",
            "Took photos of the stains for the claim",
        ),
        "Finance",
    ),
    Doc(
        "yoga",
        "Yoga classes",
        "Tuesday evenings",
        ("sport",),
        (
            "The instructor focused on breathing and hip openers",
            "Bring my own mat next time, the studio ones are slippery",
            "Felt so relaxed after the meditation at the end",
        ),
        "Health",
    ),
    Doc(
        "camping",
        "Camping in the forest",
        "Summer weekend",
        ("travel", "outdoors"),
        (
            "Pitched the tent next to the stream",
            "We cooked sausages over the campfire and watched the stars",
            "Mosquitoes everywhere, bring repellent next time",
        ),
        "Travel",
    ),
    Doc(
        "french",
        "French lessons",
        "Evening course",
        ("learning",),
        (
            "Learned the subjunctive today, so confusing",
            "Our teacher is from Lyon and speaks very fast",
            "Homework: write a letter to a pen pal in French",
        ),
        "Personal",
    ),
    Doc(
        "budget",
        "Household budget",
        "Monthly spending",
        ("money",),
        (
            "Groceries cost 450 this month, more than planned",
            "Cancel the streaming subscription we never use",
            "Put 200 aside into the savings account",
        ),
        "Finance",
    ),
    Doc(
        "paris",
        "Paris with Mum",
        "Long weekend in Paris",
        ("travel", "family"),
        (
            "Climbed the Eiffel Tower at sunset",
            "Mum loved the Impressionist paintings at the Musée d'Orsay",
            "Croissants and café crème every morning",
        ),
        "Travel",
    ),
    Doc(
        "hiking",
        "Hiking the ridge",
        "Mountain hike",
        ("outdoors",),
        (
            "The trail along the ridge was narrow and windy",
            "Reached the summit cairn after five hours",
            "Ate our sandwiches by the lake on the way down",
        ),
        "Travel",
    ),
    Doc(
        "phone",
        "New phone",
        "Switching carriers",
        ("tech",),
        (
            "Ported my number to the new carrier",
            "The battery lasts two days, much better than the old one",
            "Transferred the chats and photos with the migration tool",
        ),
        "Work",
    ),
    Doc(
        "doctor",
        "Back pain",
        "Physiotherapy",
        ("health",),
        (
            "The physiotherapist gave me stretches for the lower back",
            "Sitting at the desk all day makes the pain worse",
            "Ordered a standing desk for the home office",
        ),
        "Health",
    ),
)


def messages_of(doc: Doc, index: int) -> list[str]:
    """The doc's messages with filler chat woven in: ten per memory."""
    out: list[str] = []
    filler = [FILLER[(index * 7 + i) % len(FILLER)] for i in range(10 - len(doc.messages))]
    topical = list(doc.messages)
    while topical or filler:
        if filler:
            out.append(filler.pop())
        if topical:
            out.append(topical.pop(0))
        if filler:
            out.append(filler.pop())
    return out


TEXT_CASES: tuple[Case, ...] = (
    # exact words
    Case("castle", "lisbon|birthday", "castle", kind="exact", also=("lisbon", "birthday")),
    Case("castle view", "lisbon", "tram 28 up to the castle", kind="exact"),
    Case("nutmeg", "lasagna", "pinch of nutmeg", kind="exact"),
    Case("shinkansen", "japan", "shinkansen", kind="exact"),
    Case("aphids roses", "garden", "Aphids", kind="exact"),
    Case("windscreen wipers", "car", "brake pads", kind="exact"),
    # stems
    Case("running", "marathon", kind="stem"),
    Case("vaccinated", "vaccine", "vaccination", kind="stem"),
    Case("baked bread", "sourdough", "bread", kind="stem"),
    Case("climbed", "paris|lisbon", "climb", kind="stem", also=("paris", "lisbon")),
    Case("climbed tower", "paris", "Eiffel", kind="stem"),
    Case("tickets concerts", "concert", "tickets", kind="stem"),
    # typos
    Case("castel", "lisbon|birthday", "castle", kind="typo", also=("lisbon", "birthday")),
    Case("castel river", "lisbon", "castle", kind="typo"),
    Case("lasagne", "lasagna", kind="typo"),
    Case("dentst", "dentist", kind="typo"),
    Case("sourdogh", "sourdough", kind="typo"),
    Case("physiotherapyst", "doctor", "physiotherapist", kind="typo"),
    # prefixes and short queries
    Case("shinkan", "japan", "shinkansen", kind="prefix"),
    Case("vacc", "vaccine", kind="prefix"),
    Case("fado", "lisbon", "fado", kind="short"),
    # phrases: the words in this order, not the same words elsewhere
    Case('"tram 28"', "lisbon", "tram 28", kind="phrase"),
    Case('"the bus driver"', "bus", "bus driver", kind="phrase"),
    Case('"high E"', "guitar", "high E", kind="phrase"),
    # title and tags weigh more than a passing word
    Case("Japan", "japan", kind="title"),
    Case("portugal", "lisbon", kind="tags"),
)

SEMANTIC_CASES: tuple[Case, ...] = (
    Case("fortress", "lisbon", "castle", mode="semantic", kind="synonym"),
    Case("physician", "doctor|dentist|vaccine", mode="semantic", kind="synonym"),
    Case("jogging", "marathon", mode="semantic", kind="synonym"),
    Case("kitten", "cat", mode="semantic", kind="synonym"),
    Case("notebook computer", "laptop", mode="semantic", kind="synonym"),
    Case("skiing holiday", "ski", mode="semantic", kind="synonym"),
)
