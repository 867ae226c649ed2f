"""The predict command's image grid."""

import pytest
import torch

from vitlab.viz.predictions import prediction_grid_figure, prediction_title, save_prediction_grid

CLASSES = ["pizza", "steak", "sushi"]


def test_titles_say_prediction_probability_and_truth_in_the_course_colours():
    probabilities = torch.tensor([0.05, 0.02, 0.93])
    assert prediction_title(probabilities, CLASSES, 2) == ("pred: sushi (0.93)\ntrue: sushi", "green")
    assert prediction_title(probabilities, CLASSES, 1) == ("pred: sushi (0.93)\ntrue: steak", "red")
    assert prediction_title(probabilities, CLASSES, None) == ("pred: sushi (0.93)", "black")


def test_grid_takes_a_list_of_images_of_any_size_and_dtype(tmp_path):
    images = [
        torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8),
        torch.rand(3, 32, 32),
        torch.randint(0, 256, (3, 50, 30), dtype=torch.uint8),
        torch.rand(3, 32, 32),
        torch.rand(3, 24, 24),
    ]
    probabilities = torch.softmax(torch.randn(5, 3), dim=-1)
    labels = [0, None, 2, 1, 0]
    figure = prediction_grid_figure(images, probabilities, CLASSES, true_labels=labels)
    panels = figure.axes
    assert len(panels) == 2 * 4  # 4 columns, 2 rows, the last 3 panels empty
    for axes, image, probs, label in zip(panels, images, probabilities, labels, strict=False):
        shown = axes.images[0].get_array()
        assert shown.shape == (*image.shape[1:], 3)  # each image at its own size, channels last
        assert (axes.get_title(), axes.title.get_color()) == prediction_title(probs, CLASSES, label)
    assert [len(axes.images) for axes in panels[5:]] == [0, 0, 0]
    path = save_prediction_grid(images, probabilities, CLASSES, tmp_path / "out" / "grid.png", labels)
    assert path.stat().st_size > 0


def test_grid_takes_a_batch_tensor_and_tensor_labels(tmp_path):
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    figure = prediction_grid_figure(images, torch.eye(3)[:2], CLASSES, true_labels=torch.tensor([0, 2]))
    assert [axes.get_title() for axes in figure.axes] == [
        "pred: pizza (1.00)\ntrue: pizza",
        "pred: steak (1.00)\ntrue: sushi",
    ]


def test_mismatched_inputs_are_reported():
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"2 images but 3 rows of probabilities"):
        save_prediction_grid(images, torch.rand(3, 3), CLASSES, "unused.png")
    with pytest.raises(ValueError, match=r"probabilities have 4 classes but 3 class_names"):
        save_prediction_grid(images, torch.rand(2, 4), CLASSES, "unused.png")
    with pytest.raises(ValueError, match=r"1 true_labels for 2 images"):
        save_prediction_grid(images, torch.rand(2, 3), CLASSES, "unused.png", true_labels=[0])


def test_a_grid_of_some_of_the_images_says_how_many_it_shows(assert_readable):
    """predict.py shows the first grid_max_images of the images it was given."""
    names = [
        "apple_pie",
        "breakfast_burrito",
        "chicken_quesadilla",
        "chocolate_mousse",
        "strawberry_shortcake",
    ]
    images = torch.randint(0, 256, (16, 3, 48, 40), dtype=torch.uint8)
    probabilities = torch.softmax(torch.randn(16, len(names), generator=torch.Generator().manual_seed(0)), -1)
    labels = [index % len(names) for index in range(16)]
    figure = prediction_grid_figure(images, probabilities, names, labels, total=32)
    assert figure.get_suptitle() == "16 of 32 shown"
    assert_readable(figure)  # the long class names included
    assert prediction_grid_figure(images, probabilities, names, labels, total=16).get_suptitle() == ""
    assert prediction_grid_figure(images, probabilities, names, labels).get_suptitle() == ""
    with pytest.raises(ValueError, match=r"total=8 but 16 images are shown"):
        prediction_grid_figure(images, probabilities, names, labels, total=8)
