from model.training.corpus import builtin_source_note, builtin_split, builtin_works, validation_cut


def test_all_42_works_ship_with_their_provenance():
    works = builtin_works()
    assert len(works) == 42
    assert sum(len(w.text) for w in works) > 4_900_000
    assert "public domain" in builtin_source_note()


def test_validation_is_the_last_five_percent_cut_at_a_line_start():
    for work, train, validation in zip(builtin_works(), builtin_split().train, builtin_split().validation):
        assert train.text + validation.text == work.text
        assert train.text.endswith("\n")
        share = len(validation.text) / len(work.text)
        assert 0.05 <= share < 0.05 + 200 / len(work.text)


def test_cut_moves_back_to_line_start():
    text = "aaaa\nbbbbbbbbbbbbbbbbbbbb\n"
    cut = validation_cut(text, 0.5)
    assert text[cut - 1] == "\n" and cut <= len(text) // 2
