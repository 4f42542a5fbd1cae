"""Tests for keras_adapters.tasks.glue.data: task table, TSV reader and TFDS reader."""

import collections
import dataclasses
import re

import numpy as np
import pytest

from keras_adapters.tasks.glue import data as glue

# ----------------------------------------------------------------------------
# Task table


def test_task_table_covers_the_nine_glue_tasks():
    assert set(glue.TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    folders = {name: task.folder for name, task in glue.TASKS.items()}
    assert folders == {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B",
                       "qqp": "QQP", "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def test_task_properties():
    stsb, mnli, cola, rte = (glue.get_task(n) for n in ("stsb", "mnli", "cola", "rte"))
    assert stsb.is_regression and stsb.num_classes == 1 and stsb.label_names == ()
    assert stsb.is_pair and not cola.is_pair
    assert not mnli.is_regression and mnli.num_classes == 3
    assert mnli.label_names == ("contradiction", "entailment", "neutral")
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    assert rte.label_names == ("entailment", "not_entailment") and rte.dev_splits == ("dev",)
    assert glue.get_task("MRPC") is glue.TASKS["mrpc"]
    assert glue.get_task(rte) is rte
    with pytest.raises(dataclasses.FrozenInstanceError):
        rte.name = "x"


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst-3'.*cola, sst2, mrpc"):
        glue.get_task("sst-3")
    with pytest.raises(ValueError, match="Unknown GLUE task"):
        glue.read_tsv_split("/nonexistent", "squad", "dev")


def test_unknown_split_lists_valid_splits(tmp_path):
    with pytest.raises(ValueError, match="'dev'.*'mnli'.*train, dev_matched, dev_mismatched"):
        glue.read_tsv_split(tmp_path, "mnli", "dev")


# ----------------------------------------------------------------------------
# Real GLUE files

@pytest.mark.parametrize("task, split, count", [
    ("mrpc", "train", 3668), ("mrpc", "dev", 408),
    ("cola", "train", 8551), ("cola", "dev", 1043),
    ("sst2", "dev", 872), ("rte", "dev", 277), ("stsb", "dev", 1500),
    ("wnli", "dev", 71), ("qnli", "dev", 5463),
])
def test_real_split_sizes(glue_dir, task, split, count):
    examples = glue.read_tsv_split(glue_dir, task, split)
    assert len(examples) == len(examples.labels) == count
    spec = glue.get_task(task)
    if spec.is_pair:
        assert len(examples.text_b) == count
    else:
        assert examples.text_b is None
    assert all(isinstance(t, str) and t.strip() for t in examples.text_a)


def test_mrpc_first_dev_row(glue_dir):
    examples = glue.read_tsv_split(glue_dir, "mrpc", "dev")
    assert examples.text_a[0] == ("He said the foodservice pie business doesn 't fit the "
                                  "company 's long-term growth strategy .")
    # Leading quote kept verbatim (QUOTE_NONE).
    assert examples.text_b[0] == ('" The foodservice pie business does not fit our '
                                  "long-term growth strategy .")
    assert examples.labels[0] == 1 and examples.labels[1] == 0
    assert examples.labels.dtype == np.int32


def test_cola_first_and_last_dev_rows(glue_dir):
    examples = glue.read_tsv_split(glue_dir, "cola", "dev")
    assert examples.text_a[0] == "The sailors rode the breeze clear of the rocks."
    # The last line has no trailing newline.
    assert examples.text_a[-1] == "John talked to Bill about himself."
    assert examples.labels[0] == 1


def test_stsb_scores_are_float(glue_dir):
    examples = glue.read_tsv_split(glue_dir, "stsb", "dev")
    assert examples.labels.dtype == np.float32
    assert examples.labels[:2].tolist() == [5.0, 4.75]
    assert examples.text_a[0] == "A man with a hard hat is dancing."
    assert examples.text_b[0] == "A man wearing a hard hat is dancing."
    assert 0.0 <= examples.labels.min() and examples.labels.max() <= 5.0
    # Reference values computed independently with awk over the file.
    assert len(np.unique(examples.labels)) == 78
    assert examples.labels.astype(np.float64).sum() == pytest.approx(3545.8613, abs=1e-3)


def test_rte_label_mapping(glue_dir):
    examples = glue.read_tsv_split(glue_dir, "rte", "dev")
    # File rows 1 and 2 are labelled not_entailment and entailment.
    assert examples.labels[:2].tolist() == [1, 0]
    assert examples.text_b[0] == "Christopher Reeve had an accident."


# Class counts computed independently with awk over the files.
@pytest.mark.parametrize("task, split, counts", [
    ("mrpc", "dev", {0: 129, 1: 279}), ("mrpc", "train", {0: 1194, 1: 2474}),
    ("cola", "dev", {0: 322, 1: 721}), ("cola", "train", {0: 2528, 1: 6023}),
    ("sst2", "dev", {0: 428, 1: 444}), ("rte", "dev", {0: 146, 1: 131}),
    ("wnli", "dev", {0: 40, 1: 31}), ("qnli", "dev", {0: 2702, 1: 2761}),
])
def test_real_label_distribution(glue_dir, task, split, counts):
    labels = glue.read_tsv_split(glue_dir, task, split).labels
    assert dict(collections.Counter(labels.tolist())) == counts


def test_real_test_split_is_unlabelled(glue_dir):
    # CoLA test, unlike train/dev, has a header row.
    cola = glue.read_tsv_split(glue_dir, "cola", "test")
    assert cola.labels is None and len(cola) == 1063
    assert cola.text_a[0] == "Bill whistled past the house."
    mrpc = glue.load_examples("mrpc", "test", glue_dir)
    assert mrpc.labels is None and len(mrpc) == len(mrpc.text_b) == 1725


# ----------------------------------------------------------------------------
# Malformed files

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
STSB_HEADER = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
               "sentence1\tsentence2\tscore\n")


def write(tmp_path, folder, split, text):
    path = tmp_path / folder / f"{split}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def stsb_row(score):
    return f"0\tg\tf\t2012\t0\tnone\tnone\tA man.\tA person.\t{score}\n"


@pytest.mark.parametrize("folder, task, text, line, pattern", [
    ("RTE", "rte", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n", 3,
     "expected 4 tab-separated fields.*found 3"),
    ("RTE", "rte", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tentailment\textra\n", 3, "found 5"),
    ("RTE", "rte", RTE_HEADER + "0\ta\tb\tentailment\n\n", 3, "found 0"),
    ("RTE", "rte", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\tcontradiction\n", 3,
     "field 'label' has unknown label 'contradiction'"),
    ("STS-B", "stsb", STSB_HEADER + stsb_row("5.000") + stsb_row("4.75") + stsb_row("high"), 4,
     "field 'score' must be a finite number, got 'high'"),
    ("STS-B", "stsb", STSB_HEADER + stsb_row("nan"), 2, "field 'score' must be a finite number"),
    ("CoLA", "cola", "gj04\t1\t\tGood.\ngj04\t1\tBad.\n", 2,
     "expected 4 tab-separated fields.*found 3"),
    ("CoLA", "cola", "gj04\t1\t\tGood.\ngj04\t0\t*\tBad.\ngj04\tyes\t\tUgly.\n", 3,
     "unknown label 'yes'"),
    ("RTE", "rte", "", 1, "empty file"),
    ("CoLA", "cola", "", 1, "empty file"),
    ("RTE", "rte", RTE_HEADER, 2, "no examples after the header"),
    ("RTE", "rte", "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n", 1,
     "no column 'label'"),
])
def test_malformed_file_names_file_and_line(tmp_path, folder, task, text, line, pattern):
    path = write(tmp_path, folder, "dev", text)
    with pytest.raises(glue.GlueFormatError, match=re.escape(f"{path}:{line}:") + ".*" + pattern):
        glue.read_tsv_split(tmp_path, task, "dev")


def test_format_error_is_value_error():
    assert issubclass(glue.GlueFormatError, ValueError)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "WNLI" / "train.tsv"))):
        glue.read_tsv_split(tmp_path, "wnli", "train")


def test_bom_and_quotes(tmp_path):
    write(tmp_path, "MRPC", "train", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
          '0\t1\t2\tHe said " hi .\t" Bye \' now\n')
    examples = glue.read_tsv_split(tmp_path, "mrpc", "train")
    assert examples.text_a == ['He said " hi .'] and examples.text_b == ["\" Bye ' now"]
    assert examples.labels.tolist() == [0]


# ----------------------------------------------------------------------------
# MNLI and QQP (not available offline: synthetic files in the GLUE layout)

MNLI_PARSES = "sentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse"


def mnli_file(label_columns, rows):
    header = (f"index\tpromptID\tpairID\tgenre\t{MNLI_PARSES}\t"
              f"sentence1\tsentence2\t{label_columns}\n")
    return header + "".join(
        f"{i}\t1\t1n\tfiction\t(a)\t(b)\t(ROOT a)\t(ROOT b)\t{s1}\t{s2}\t{labels}\n"
        for i, (s1, s2, labels) in enumerate(rows))


def test_mnli_train_and_both_dev_splits(tmp_path):
    write(tmp_path, "MNLI", "train", mnli_file("label1\tgold_label", [
        ("P0", "H0", "neutral\tneutral"), ("P1", "H1", "contradiction\tcontradiction")]))
    dev_labels = "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label"
    write(tmp_path, "MNLI", "dev_matched", mnli_file(dev_labels, [
        # gold_label (last column) decides, not label1.
        ("M0", "H0", "neutral\tentailment\tentailment\tentailment\tneutral\tentailment"),
        ("M1", "H1", "\t".join(["contradiction"] * 2 + ["neutral"] + ["contradiction"] * 3))]))
    write(tmp_path, "MNLI", "dev_mismatched", mnli_file(dev_labels, [
        ("X0", "Y0", "neutral\tneutral\tneutral\tneutral\tneutral\tneutral")]))

    train = glue.read_tsv_split(tmp_path, "mnli", "train")
    assert train.text_a == ["P0", "P1"] and train.text_b == ["H0", "H1"]
    assert train.labels.tolist() == [2, 0]
    matched = glue.load_examples("mnli", "dev_matched", tmp_path)
    assert matched.text_a == ["M0", "M1"] and matched.labels.tolist() == [1, 0]
    mismatched = glue.read_tsv_split(tmp_path, "mnli", "dev_mismatched")
    assert mismatched.text_a == ["X0"] and mismatched.labels.tolist() == [2]


def test_mnli_unknown_gold_label_names_line(tmp_path):
    path = write(tmp_path, "MNLI", "dev_matched", mnli_file("label1\tgold_label", [
        ("P0", "H0", "neutral\tneutral"), ("P1", "H1", "neutral\t-")]))
    with pytest.raises(glue.GlueFormatError, match=re.escape(f"{path}:3:") + ".*'gold_label'.*'-'"):
        glue.read_tsv_split(tmp_path, "mnli", "dev_matched")


def test_qqp(tmp_path):
    write(tmp_path, "QQP", "dev", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
          "7\t1\t2\tHow do I learn?\tWhat is the way to learn?\t1\n"
          "8\t3\t4\tWhy is the sky blue?\tWhat is 2+2?\t0\n")
    examples = glue.read_tsv_split(tmp_path, "qqp", "dev")
    assert examples.text_a == ["How do I learn?", "Why is the sky blue?"]
    assert examples.text_b == ["What is the way to learn?", "What is 2+2?"]
    assert examples.labels.tolist() == [1, 0]


# ----------------------------------------------------------------------------
# TFDS (offline, through TFDS mock data generated from the feature specs)

@pytest.fixture(scope="module")
def tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        yield tfds


def raw_tfds(tfds, name, split):
    dataset, info = tfds.load(f"glue/{name}", split=split, with_info=True)
    return list(tfds.as_numpy(dataset)), info


def test_tfds_mnli_labels_are_remapped_to_tsv_order(tfds):
    examples = glue.load_tfds_split("mnli", "dev_matched")
    raw, info = raw_tfds(tfds, "mnli", "validation_matched")
    label_feature = info.features["label"]
    assert label_feature.names == ["entailment", "neutral", "contradiction"]
    assert examples.labels.dtype == np.int32 and len(examples) == len(raw) == 40
    ours = [glue.TASKS["mnli"].label_names[i] for i in examples.labels]
    assert ours == [label_feature.int2str(int(r["label"])) for r in raw]
    assert len(set(ours)) == 3  # all classes exercised
    assert examples.labels.tolist() != [int(r["label"]) for r in raw]  # remapped, not copied
    assert examples.text_a == [r["premise"].decode() for r in raw]
    assert examples.text_b == [r["hypothesis"].decode() for r in raw]
    assert all(isinstance(t, str) for t in examples.text_a + examples.text_b)


@pytest.mark.parametrize("name", ["rte", "qnli"])
def test_tfds_nli_label_names_agree_with_tsv_order(tfds, name):
    examples = glue.load_tfds_split(name, "dev")
    raw, info = raw_tfds(tfds, name, "validation")
    ours = [glue.TASKS[name].label_names[i] for i in examples.labels]
    assert ours == [info.features["label"].int2str(int(r["label"])) for r in raw]


def test_tfds_single_sentence_regression_and_test_split(tfds):
    sst2 = glue.load_examples("sst2", "train", None, source="tfds")
    raw, _ = raw_tfds(tfds, "sst2", "train")
    assert sst2.text_b is None and sst2.text_a == [r["sentence"].decode() for r in raw]
    assert sst2.labels.tolist() == [int(r["label"]) for r in raw]

    stsb = glue.load_tfds_split("stsb", "dev")
    raw, _ = raw_tfds(tfds, "stsb", "validation")
    assert stsb.labels.dtype == np.float32
    np.testing.assert_allclose(stsb.labels, [r["label"] for r in raw])

    qqp = glue.load_tfds_split("qqp", "test")
    assert qqp.labels is None and len(qqp.text_b) == len(qqp) == 40


def test_load_examples_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown source 'csv'"):
        glue.load_examples("rte", "dev", tmp_path, source="csv")
    with pytest.raises(ValueError, match="data_dir is required"):
        glue.load_examples("rte", "dev", None)
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        glue.load_tfds_split("rte", "validation")
