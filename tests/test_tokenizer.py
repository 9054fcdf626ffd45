from dynamicrafter.models.tokenizer import get_tokenizer


def test_known_clip_ids():
    tok = get_tokenizer()
    assert tok.vocab_size == 49408
    ids = tok(["a photo of a cat"])[0]
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[7:].eq(0).all()  # padded with 0


def test_cleaning_and_case():
    tok = get_tokenizer()
    assert tok.encode("A  Photo\nof a CAT ") == tok.encode("a photo of a cat")
    assert tok.encode("fish &amp; chips") == tok.encode("fish & chips")


def test_truncation_ends_with_end_of_text():
    tok = get_tokenizer()
    ids = tok(["word " * 200])[0]
    assert ids.shape == (77,) and ids[0] == tok.sot_id and ids[-1] == tok.eot_id and (ids != 0).all()


def test_empty_prompt():
    ids = get_tokenizer()([""])[0]
    assert ids[:2].tolist() == [49406, 49407] and ids[2:].eq(0).all()
