"""The LDAP publisher against a real OpenLDAP slapd started by the tests."""

from __future__ import annotations

import logging

import pytest

from integrations.directory.ldap import LdapDirectory
from pipeline.errors import ConfigError, NotFound, PermanentFailure, RetryLater
from pipeline.settings import LdapSettings
from tests.support.dircerts import FOREIGN_CA, OUR_CA, fp, make_ca, smime_blob
from tests.support.slapd import ADMIN_DN, BASE_DN, Slapd

pytestmark = pytest.mark.slapd


def directory(server: Slapd, **overrides: object) -> LdapDirectory:
    values: dict[str, object] = {
        "url": server.url,
        "bind_dn": ADMIN_DN,
        "base_dn": BASE_DN,
        "binary_suffix": True,
        "start_tls": True,
        "ca_file": str(server.ca_file),
        "timeout_seconds": 3.0,
    }
    values.update(overrides)
    password = str(values.pop("password", server.admin_password))
    return LdapDirectory(LdapSettings(**values), bind_password=password)  # type: ignore[arg-type]


def test_add_publishes_the_certificate_and_is_idempotent(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    der = OUR_CA.issue(mailbox)
    d = directory(slapd_server)
    d.publish(mailbox=mailbox, certificate_der=der, removable_sha256=frozenset())
    d.publish(mailbox=mailbox, certificate_der=der, removable_sha256=frozenset())
    assert slapd_server.values(dn) == ([der], [])
    assert d.certificates(mailbox=mailbox) == ([der], [])


def test_renewal_adds_the_new_and_drops_the_superseded_one(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    old, new = OUR_CA.issue(mailbox), OUR_CA.issue(mailbox)
    d = directory(slapd_server)
    d.publish(mailbox=mailbox, certificate_der=old, removable_sha256=frozenset())
    d.publish(mailbox=mailbox, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert slapd_server.values(dn)[0] == [new]


def test_revocation_removes_the_certificate(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    der = OUR_CA.issue(mailbox)
    d = directory(slapd_server)
    d.publish(mailbox=mailbox, certificate_der=der, removable_sha256=frozenset())
    d.unpublish(mailbox=mailbox, removable_sha256=frozenset({fp(der).upper()}))
    assert slapd_server.values(dn)[0] == []
    d.unpublish(mailbox=mailbox, removable_sha256=frozenset({fp(der)}))  # nothing left to remove: no error


def test_other_certificates_are_left_untouched(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    foreign = FOREIGN_CA.issue(mailbox)
    ours_in_use = OUR_CA.issue(mailbox)  # same issuer as ours, but not listed as removable
    old, new = OUR_CA.issue(mailbox), OUR_CA.issue(mailbox)
    slapd_server.set_values(dn, [foreign, ours_in_use, old])
    directory(slapd_server).publish(mailbox=mailbox, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert sorted(slapd_server.values(dn)[0]) == sorted([foreign, ours_in_use, new])


def test_stale_smime_blobs_of_ours_go_and_foreign_ones_stay_with_a_warning(
    slapd_server: Slapd, ldap_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    mailbox, dn = ldap_user
    old, new, foreign = OUR_CA.issue(mailbox), OUR_CA.issue(mailbox), FOREIGN_CA.issue(mailbox)
    stale = smime_blob(old, OUR_CA.der)  # as Outlook writes it: leaf plus chain
    foreign_blob = smime_blob(foreign, FOREIGN_CA.der)
    slapd_server.set_values(dn, [old], smime=(stale, foreign_blob))
    with caplog.at_level(logging.WARNING, logger="integrations.directory.ldap"):
        directory(slapd_server).publish(mailbox=mailbox, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert slapd_server.values(dn) == ([new], [foreign_blob])
    assert fp(foreign) in caplog.text and mailbox in caplog.text


def test_full_entry_fails_clearly_and_removes_nothing(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    others = [FOREIGN_CA.issue(mailbox) for _ in range(14)]
    old = OUR_CA.issue(mailbox)
    slapd_server.set_values(dn, [*others, old])
    d = directory(slapd_server)
    # Dropping our superseded one makes room: 14 others + the new one = 15.
    new = OUR_CA.issue(mailbox)
    d.publish(mailbox=mailbox, certificate_der=new, removable_sha256=frozenset({fp(old)}))
    assert len(slapd_server.values(dn)[0]) == 15
    # Now all 15 are in use or foreign: a further certificate cannot be added.
    newer = OUR_CA.issue(mailbox)
    before = slapd_server.values(dn)
    with pytest.raises(PermanentFailure) as caught:
        d.publish(mailbox=mailbox, certificate_der=newer, removable_sha256=frozenset())
    assert mailbox in caught.value.user_reason and "15" in caught.value.user_reason
    assert slapd_server.values(dn) == before


def test_unknown_mailbox_is_not_found_by_name(slapd_server: Slapd) -> None:
    d = directory(slapd_server)
    with pytest.raises(NotFound, match=r"nobody@example\.com"):
        d.publish(
            mailbox="nobody@example.com", certificate_der=OUR_CA.issue("x@example.com"), removable_sha256=frozenset()
        )
    # Filter metacharacters in a mailbox are escaped, not interpreted.
    with pytest.raises(NotFound):
        d.unpublish(mailbox="*", removable_sha256=frozenset())


def test_two_users_with_one_mailbox_are_refused(slapd_server: Slapd) -> None:
    mailbox, _ = slapd_server.add_user()
    slapd_server.add_user(mailbox)
    with pytest.raises(PermanentFailure) as caught:
        directory(slapd_server).publish(
            mailbox=mailbox, certificate_der=OUR_CA.issue(mailbox), removable_sha256=frozenset()
        )
    assert "More than one" in caught.value.user_reason and mailbox in caught.value.user_reason


def test_server_down_then_up(private_slapd: Slapd) -> None:
    mailbox, dn = private_slapd.add_user()
    der = OUR_CA.issue(mailbox)
    d = directory(private_slapd, timeout_seconds=1.0)
    private_slapd.stop()
    with pytest.raises(RetryLater):
        d.publish(mailbox=mailbox, certificate_der=der, removable_sha256=frozenset())
    assert d.check() != []
    private_slapd.start()
    d.publish(mailbox=mailbox, certificate_der=der, removable_sha256=frozenset())
    assert private_slapd.values(dn)[0] == [der]


def test_ldaps_with_verification(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    der = OUR_CA.issue(mailbox)
    directory(slapd_server, url=slapd_server.ldaps_url, start_tls=False).publish(
        mailbox=mailbox, certificate_der=der, removable_sha256=frozenset()
    )
    assert slapd_server.values(dn)[0] == [der]


@pytest.mark.parametrize("use_ldaps", [False, True])
def test_untrusted_server_certificate_is_refused(
    slapd_server: Slapd, ldap_user: tuple[str, str], tmp_path: object, use_ldaps: bool
) -> None:
    from pathlib import Path

    from cryptography.hazmat.primitives.serialization import Encoding

    other_ca = Path(str(tmp_path)) / "other-ca.pem"
    other_ca.write_bytes(make_ca("Unrelated CA").certificate.public_bytes(Encoding.PEM))
    url = slapd_server.ldaps_url if use_ldaps else slapd_server.url
    d = directory(slapd_server, url=url, ca_file=str(other_ca))
    with pytest.raises(PermanentFailure) as caught:
        d.publish(mailbox=ldap_user[0], certificate_der=OUR_CA.issue(ldap_user[0]), removable_sha256=frozenset())
    assert "not trusted" in caught.value.admin_detail
    assert any("not trusted" in p for p in d.check())


def test_plain_ldap_is_allowed_with_a_warning(
    slapd_server: Slapd, ldap_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="integrations.directory.ldap"):
        d = directory(slapd_server, start_tls=False, ca_file="")
    assert "plain ldap://" in caplog.text
    d.publish(mailbox=ldap_user[0], certificate_der=OUR_CA.issue(ldap_user[0]), removable_sha256=frozenset())


def test_check_reports_configuration_problems(slapd_server: Slapd) -> None:
    assert directory(slapd_server).check() == []
    wrong_password = directory(slapd_server, password="not-the-password")
    assert any("LDAP_BIND_PASSWORD" in p for p in wrong_password.check())
    with pytest.raises(PermanentFailure):
        wrong_password.unpublish(mailbox="alice@example.com", removable_sha256=frozenset())
    assert any(
        "finds no entries" in p for p in directory(slapd_server, user_filter="(employeeNumber={mailbox})").check()
    )
    assert any("does not exist" in p for p in directory(slapd_server, base_dn="dc=nowhere,dc=com").check())
    secret = "s3cret-value-not-in-messages"
    assert all(secret not in p for p in directory(slapd_server, password=secret).check())


def test_active_directory_style_attribute_name_without_binary(slapd_server: Slapd) -> None:
    d = directory(slapd_server, binary_suffix=False)
    assert d.certificate_attribute == "userCertificate"
    # OpenLDAP insists on ;binary for userCertificate, so the write is refused for good.
    mailbox, _ = slapd_server.add_user()
    with pytest.raises(PermanentFailure):
        d.publish(mailbox=mailbox, certificate_der=OUR_CA.issue(mailbox), removable_sha256=frozenset())


def test_invalid_settings_are_refused_early() -> None:
    with pytest.raises(ConfigError):
        LdapDirectory(LdapSettings(url="http://dc.example.com", base_dn=BASE_DN), bind_password="")
    with pytest.raises(ConfigError):
        LdapDirectory(LdapSettings(url="ldaps://dc", base_dn=BASE_DN, user_filter="(mail=x)"), bind_password="")


def test_all_stale_smime_values_are_removed_on_unpublish(slapd_server: Slapd, ldap_user: tuple[str, str]) -> None:
    mailbox, dn = ldap_user
    old, older = OUR_CA.issue(mailbox), OUR_CA.issue(mailbox)
    slapd_server.set_values(dn, [old], smime=(smime_blob(old, OUR_CA.der), smime_blob(older)))
    directory(slapd_server).unpublish(mailbox=mailbox, removable_sha256=frozenset({fp(old), fp(older)}))
    assert slapd_server.values(dn) == ([], [])
