"""SMPP command_status values (SMPP 3.4 §5.1.3; 0x104 from SMPP 5.0) and filterd's
own (SPEC §4 and §7, in the vendor-specific range)."""

from __future__ import annotations

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RINVPRTFLG = 0x06
ESME_RINVREGDLVFLG = 0x07
ESME_RSYSERR = 0x08
ESME_RINVSRCADR = 0x0A
ESME_RINVDSTADR = 0x0B
ESME_RINVMSGID = 0x0C
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RINVSERTYP = 0x15
ESME_RINVESMCLASS = 0x43
ESME_RSUBMITFAIL = 0x45
ESME_RINVSRCTON = 0x48
ESME_RINVSRCNPI = 0x49
ESME_RINVDSTTON = 0x50
ESME_RINVDSTNPI = 0x51
ESME_RINVSYSTYP = 0x53
ESME_RTHROTTLED = 0x58
ESME_RINVSCHED = 0x61
ESME_RINVEXPIRY = 0x62
ESME_RINVOPTPARSTREAM = 0xC0
ESME_ROPTPARNOTALLWD = 0xC1
ESME_RINVPARLEN = 0xC2
ESME_RMISSINGOPTPARAM = 0xC3
ESME_RINVOPTPARAMVAL = 0xC4
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF
ESME_RINVDCS = 0x104
FILTERD_REFUSED = 0x00000400
"""SPEC §4: the recipient has refused commercial messages (SMPP vendor-specific range)."""
FILTERD_NO_CONSENT = 0x00000401
"""SPEC §4: no consent or request on record for the recipient."""
FILTERD_NO_CANCEL_METHOD = 0x00000402
"""SPEC §7: a commercial SMS without the sender's cancel instruction, none appended
(`cancel_method = "require"`, or it does not fit)."""
FILTERD_NO_SIGNATURE = 0x00000403
"""SPEC §7: a commercial SMS whose text neither starts nor ends with the sender's signature."""
FILTERD_QUIET_HOURS = 0x00000404
"""SPEC §7: inside the recipient's quiet hours; deferred, the client sends it again later."""
