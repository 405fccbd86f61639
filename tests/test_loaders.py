"""DevicePrefetcher: the next batch is moved to the device before the current one is handed to the step."""
import torch

from inception_train.data.loaders import DevicePrefetcher


class RecordingLoader:
    """Four batches of (images, labels); records how many were taken and which epochs were set."""

    def __init__(self, batches: int = 4):
        self.batches, self.taken, self.epochs = batches, 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for i in range(self.batches):
            self.taken += 1
            yield torch.full((2, 3, 5, 5), float(i)), torch.tensor([i, i])


def test_the_next_batch_is_staged_before_the_current_one_is_used():
    source = RecordingLoader()
    loader = DevicePrefetcher(source, torch.device('cpu'), torch.channels_last)
    loader.set_epoch(7)
    assert source.epochs == [7] and len(loader) == 4
    labels = []
    for i, (images, target) in enumerate(loader):
        assert source.taken == min(i + 2, 4)  # batch i + 1 is already on its way while step i runs
        assert images.is_contiguous(memory_format=torch.channels_last) and images[0, 0, 0, 0] == i
        labels.append(target.tolist())
    assert labels == [[0, 0], [1, 1], [2, 2], [3, 3]]


def test_an_empty_loader_yields_nothing():
    assert list(DevicePrefetcher(RecordingLoader(0), torch.device('cpu'))) == []
