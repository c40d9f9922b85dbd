"""Knowledge distillation for Keras models: `Distiller`, `TeacherCache`."""

from keras_ragkd.distillation.callbacks import DistillationScheduler
from keras_ragkd.distillation.distiller import Distiller
from keras_ragkd.distillation.losses import kd_divergence
from keras_ragkd.distillation.losses import topk_kd_divergence
from keras_ragkd.distillation.teacher_cache import TeacherCache
