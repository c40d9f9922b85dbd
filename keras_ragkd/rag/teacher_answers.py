"""Questions without answers, answered by a teacher: a distillation transfer set.

A user who distils a RAG teacher usually has a few labelled question/answer
pairs and many more questions without answers (a query log). The teacher
answers those (sequence-level distillation, Kim & Rush, 2016), and a
`TeacherCache` built over the teacher's own answers adds its token
distributions along them: the student learns from questions nobody labelled,
which a student trained on the labels alone never sees.
"""

from keras_ragkd.rag.evaluation import answer_questions
from keras_ragkd.validation import check_integer


def teacher_answered_questions(teacher, questions, batch_size=32, verbose=0):
    """`questions` with the teacher's greedy answers as their `"answer"`.

    Whatever answer a question dict holds is dropped, never read: only the
    teacher's answer is kept, so a transfer set built from labelled data
    carries no label into training.

    Args:
        teacher: a RAG question answerer (anything with `generate`), with the
            index the student will be trained against.
        questions: non-empty list of question strings or of dicts with a
            `"question"` (their other keys but `"answer"` are kept).
        batch_size: int, the teacher's `generate` batch size.
        verbose: 1 for a progress bar.

    Returns:
        A list of dicts, one per question, in order, whose `"answer"` is the
        teacher's.

    Example:

    >>> class Teacher:  # any model with `generate`
    ...     def generate(self, questions, marginalization=None, batch_size=64):
    ...         return [q.split()[-1].rstrip("?") for q in questions]
    >>> answered = teacher_answered_questions(
    ...     Teacher(), [{"question": "Capital of Peru?", "answer": "Cusco", "type": "capital"},
    ...                 "Capital of Chile?"], batch_size=2)
    >>> answered[0]
    {'question': 'Capital of Peru?', 'type': 'capital', 'answer': 'Peru'}
    >>> answered[1]["answer"]
    'Chile'
    """
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    if not questions:
        raise ValueError("Expected at least one question for the teacher to answer. "
                         f"Received: questions={questions!r}")
    entries = [_unanswered(question) for question in questions]
    answers = answer_questions(teacher, [e["question"] for e in entries], None, batch_size,
                               verbose)
    return [dict(entry, answer=answer) for entry, answer in zip(entries, answers)]


def _unanswered(question):
    """`question` as a dict without its `"answer"` (a copy)."""
    entry = {"question": question} if isinstance(question, str) else question
    if not isinstance(entry, dict) or not isinstance(entry.get("question"), str):
        raise TypeError("Each question must be a string or a dict with a string "
                        f"`\"question\"`. Received: question={question!r}")
    return {key: value for key, value in entry.items() if key != "answer"}
