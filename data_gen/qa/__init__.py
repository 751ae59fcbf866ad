"""Address labels -> LLaVA conversation data: multi-turn address QA (stage 2) and alignment pairs (stage 1).

Public API::

    build_qa(data_dir, out, stage1_out=None, cfg=QAConfig(), progress=True) -> stats dict
    DialogueGenerator(vocab, cfg).dialogue(image, address_of(vocab, sub_street), split, index)
    parse_answer_to_candidate(text, candidates, street_of) -> sub-street | None
    parse_answer(text, candidates, street_of) -> ParsedAnswer(kind, sub_street, street)
    grounded_question(question, [(address, score), ...]) -> the candidate-grounded user turn
    validate_llava_records(records) -> list of error messages
    compute_qa_stats(records) -> {"all": ..., "<split>": ...}
"""

from data_gen.qa.build import QAError, build_qa, generate_records, load_dataset_labels, stats_path_for
from data_gen.qa.config import TURN_TYPES, QAConfig
from data_gen.qa.generator import Address, DialogueGenerator, Exchange, address_of, record_id
from data_gen.qa.neighbours import NearbyIndex, haversine_m
from data_gen.qa.parse import ParsedAnswer, parse_answer, parse_answer_to_candidate
from data_gen.qa.prompt import CandidateSimulator, grounded_question
from data_gen.qa.stats import compute_qa_stats
from data_gen.qa.validate import validate_llava_records

__all__ = [
    "QAError", "build_qa", "generate_records", "load_dataset_labels", "stats_path_for", "TURN_TYPES",
    "QAConfig", "Address", "DialogueGenerator", "Exchange", "address_of", "record_id", "NearbyIndex",
    "haversine_m", "parse_answer_to_candidate", "ParsedAnswer", "parse_answer", "CandidateSimulator",
    "grounded_question", "compute_qa_stats", "validate_llava_records",
]
