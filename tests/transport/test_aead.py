"""The pure-Python ChaCha20-Poly1305 of respond.py (kernel side, stdlib only) is RFC 8439's and
interoperates with ``cryptography``'s, which the listener uses, in both directions."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from kernelfleet.launchers import respond
from tests.fuzz.strategies import fuzz_settings

# RFC 8439 section 2.8.2 (AEAD_CHACHA20_POLY1305 test vector).
RFC_KEY = bytes(range(0x80, 0xA0))
RFC_NONCE = bytes.fromhex("070000004041424344454647")
RFC_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
RFC_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the "
    b"future, sunscreen would be it."
)
RFC_CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
RFC_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")


def test_aead_matches_the_rfc_8439_test_vector() -> None:
    sealed = respond.aead_encrypt(RFC_KEY, RFC_NONCE, RFC_PLAINTEXT, RFC_AAD)
    assert sealed == RFC_CIPHERTEXT + RFC_TAG
    assert respond.aead_decrypt(RFC_KEY, RFC_NONCE, sealed, RFC_AAD) == RFC_PLAINTEXT


def test_chacha20_block_matches_rfc_8439_section_2_3_2() -> None:
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a00000000")
    assert respond.chacha20_block(key, 1, nonce).hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )


def test_poly1305_matches_rfc_8439_section_2_5_2() -> None:
    key = bytes.fromhex("85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b")
    tag = respond.poly1305_mac(b"Cryptographic Forum Research Group", key)
    assert tag.hex() == "a8061dc1305136c6c22b8baf0c0127a9"


def test_cryptography_matches_the_same_vector() -> None:
    sealed = ChaCha20Poly1305(RFC_KEY).encrypt(RFC_NONCE, RFC_PLAINTEXT, RFC_AAD)
    assert sealed == RFC_CIPHERTEXT + RFC_TAG


@fuzz_settings(60)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    plaintext=st.binary(max_size=300),
    aad=st.binary(max_size=80),
)
def test_pure_python_sealing_opens_with_cryptography(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> None:
    sealed = respond.aead_encrypt(key, nonce, plaintext, aad)
    assert ChaCha20Poly1305(key).decrypt(nonce, sealed, aad) == plaintext


@fuzz_settings(60)
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=12, max_size=12),
    plaintext=st.binary(max_size=300),
    aad=st.binary(max_size=80),
)
def test_cryptography_sealing_opens_with_pure_python(
    key: bytes, nonce: bytes, plaintext: bytes, aad: bytes
) -> None:
    sealed = ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)
    assert respond.aead_decrypt(key, nonce, sealed, aad) == plaintext


@fuzz_settings(60)
@given(
    plaintext=st.binary(max_size=100),
    flip=st.integers(min_value=0),
    part=st.sampled_from(["sealed", "aad", "nonce", "key"]),
)
def test_any_altered_bit_fails_authentication_on_both_sides(
    plaintext: bytes, flip: int, part: str
) -> None:
    key, nonce, aad = bytes(range(32)), bytes(12), b"KFR\x01\x02k1"
    sealed = respond.aead_encrypt(key, nonce, plaintext, aad)
    values = {"key": key, "nonce": nonce, "aad": aad, "sealed": sealed}
    target = bytearray(values[part])
    bit = flip % (len(target) * 8)
    target[bit // 8] ^= 1 << (bit % 8)
    values[part] = bytes(target)
    with pytest.raises(respond.AuthenticationError):
        respond.aead_decrypt(values["key"], values["nonce"], values["sealed"], values["aad"])
    with pytest.raises(InvalidTag):
        ChaCha20Poly1305(values["key"]).decrypt(values["nonce"], values["sealed"], values["aad"])


def test_sealed_data_shorter_than_a_tag_is_not_authentic() -> None:
    with pytest.raises(respond.AuthenticationError):
        respond.aead_decrypt(bytes(32), bytes(12), b"short", b"")
