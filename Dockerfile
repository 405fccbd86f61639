# inception_train on NVIDIA's NGC PyTorch image, which ships torch, torchvision and DALI built for its CUDA.
# Build:  docker build -t inception_train .
# Run:    docker run --gpus all --ipc=host -v /data/imagenet:/data/imagenet inception_train \
#             python train.py model=inception_resnet_v2 data.root=/data/imagenet
# (--ipc=host: DataLoader workers and NCCL need more shared memory than Docker's 64 MB default.)
ARG NGC_TAG=25.10-py3
FROM nvcr.io/nvidia/pytorch:${NGC_TAG}

WORKDIR /workspace/inception_train
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# The image's torch/torchvision/DALI stay as they are (reinstalling them would replace NGC's CUDA builds):
# everything else comes from the lock.
COPY requirements.lock pyproject.toml README.md ./
RUN grep -vE '^(torch|torchvision|triton|nvidia-|cuda-)' requirements.lock > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY . .
RUN pip install --no-cache-dir --no-deps -e .

CMD ["python", "train.py", "--help"]
