"""Embedded default data: the countryinfo knowledge base and QA set."""

from keras_ragkd.data.countries import QUESTION_TEMPLATES
from keras_ragkd.data.countries import country_passages
from keras_ragkd.data.countries import country_questions
from keras_ragkd.data.countries import country_records
from keras_ragkd.data.countries import country_split
