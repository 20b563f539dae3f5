"""Digit classifiers for 1x28x28 inputs (MNIST geometry), all returning logits."""

from torch import Tensor, nn


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, FC 120-84-10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class LeNet5Tanh(nn.Module):
    """The 1998 flavour of LeNet-5: tanh activations and average pooling, same shapes as `LeNet5`."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),
            nn.Tanh(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.Tanh(),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class Seed000(nn.Module):
    """The student report's network: conv 9@3x3 pad 1, avgpool, conv 36@5x5, avgpool, conv 72@2x2, FC 1152-96-10, tanh."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 9, kernel_size=3, padding=1),  # 9x28x28
            nn.Tanh(),
            nn.AvgPool2d(2),  # 9x14x14
            nn.Conv2d(9, 36, kernel_size=5),  # 36x10x10
            nn.Tanh(),
            nn.AvgPool2d(2),  # 36x5x5
            nn.Conv2d(36, 72, kernel_size=2),  # 72x4x4 = 1152
            nn.Tanh(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(72 * 4 * 4, 96),
            nn.Tanh(),
            nn.Linear(96, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class CNN2(nn.Module):
    """The Keras MNIST example: conv 32@3x3, maxpool, conv 64@3x3, maxpool, dropout 0.5, FC 1600-10 (34,826 params)."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * 5 * 5, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
