"""Entities of the fraud domain: the card that pays and the merchant that is paid."""

from feast import Entity, ValueType

card = Entity(
    name="card",
    join_keys=["card_id"],
    value_type=ValueType.INT64,
    description="A payment card; the customer-side key of every transaction.",
    owner="risk-data@skewless.example",
    # The card number never leaves the issuer: card_id is a key that does not name its
    # holder, and what is known under it is about that person.
    tags={"domain": "payments", "privacy": "pseudonymous"},
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="An acquiring merchant that receives card payments.",
    owner="risk-data@skewless.example",
    tags={"domain": "payments", "privacy": "none"},  # a business, not a person
)
