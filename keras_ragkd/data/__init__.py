"""Embedded default data (the countryinfo knowledge base and QA set) and
readers for the user's own corpora and question/answer files."""

from keras_ragkd.data.countries import DEFAULT_QUESTION_TYPES
from keras_ragkd.data.countries import NUMERIC_QUESTION_TYPES
from keras_ragkd.data.countries import QUESTION_TEMPLATES
from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.data.countries import country_records
from keras_ragkd.data.countries import country_split
from keras_ragkd.data.counterfactual import counterfactual_augment
from keras_ragkd.data.counterfactual import derange_facts
from keras_ragkd.data.elements import element_passages
from keras_ragkd.data.elements import element_questions
from keras_ragkd.data.files import DataFileError
from keras_ragkd.data.files import read_corpus
from keras_ragkd.data.files import read_qa_pairs
