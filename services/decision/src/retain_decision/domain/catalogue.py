"""A demo catalogue for a Thai omnichannel retailer ("Siam Mart"), seeded into an empty workspace.

It covers the plays of the brief so that next-best-actions work out of the box: welcome, onboarding,
cross-sell, save (discount and free delivery), winback, service recovery, replenishment, engagement.
Values and costs are in baht; `prior_propensity` is used until the scoring service has learned.
"""

from __future__ import annotations

from dataclasses import dataclass

from retain_decision.domain.offers import Offer, Template

MARKETING = "marketing"
SERVICE = "service"


@dataclass(frozen=True)
class _Copy:
    """One offer's text in one language: a title, a long body (email) and a short one (sms/line/push)."""

    locale: str
    title: str
    long: str
    short: str


def _templates(channels: tuple[str, ...], *copies: _Copy) -> tuple[Template, ...]:
    out: list[Template] = []
    for channel in channels:
        for copy in copies:
            if channel == "email":
                out.append(Template(channel, copy.locale, copy.title, copy.long))
            elif channel in ("push", "in_app"):
                out.append(Template(channel, copy.locale, copy.title, copy.short))
            else:
                out.append(Template(channel, copy.locale, "", copy.short))
    return tuple(out)


def default_offers() -> list[Offer]:
    """Nine offers, version 0 (the store assigns version 1 when seeding)."""
    return [
        Offer(
            offer_id="welcome_points",
            name="Welcome: 100 bonus points",
            play_type="onboarding",
            channels=("email", "line", "push", "in_app"),
            placements=("home",),
            purpose=MARKETING,
            eligibility='lifecycle_stage == "new" and tenure_days <= 30',
            value=180.0,
            cost=25.0,
            conflict_group="onboarding",
            prior_propensity=0.30,
            templates=_templates(
                ("email", "line", "push", "in_app"),
                _Copy(
                    "th",
                    "ยินดีต้อนรับสู่ Siam Mart Rewards",
                    "สวัสดีคุณ{{ first_name }} ขอบคุณที่สมัครสมาชิก Siam Mart Rewards "
                    "รับ 100 คะแนนโบนัสเมื่อช้อปครั้งแรกภายใน 30 วัน",
                    "คุณ{{ first_name }} รับ 100 คะแนนโบนัสเมื่อช้อปครั้งแรกภายใน 30 วัน",
                ),
                _Copy(
                    "en",
                    "Welcome to Siam Mart Rewards",
                    "Hi {{ first_name }}, thanks for joining Siam Mart Rewards. "
                    "Shop within 30 days and get 100 bonus points.",
                    "Hi {{ first_name }}, get 100 bonus points on your first order within 30 days.",
                ),
            ),
        ),
        Offer(
            offer_id="first_app_order_free_delivery",
            name="Onboarding: free delivery on first app order",
            play_type="onboarding",
            channels=("push", "in_app", "email"),
            placements=("home", "checkout"),
            purpose=MARKETING,
            eligibility="frequency == 0 and tenure_days <= 60",
            value=220.0,
            cost=40.0,
            conflict_group="onboarding",
            prior_propensity=0.18,
            templates=_templates(
                ("push", "in_app", "email"),
                _Copy(
                    "th",
                    "ส่งฟรีออเดอร์แรกในแอป",
                    "คุณ{{ first_name }} สั่งซื้อผ่านแอป Siam Mart ครั้งแรก รับส่งฟรีทันที ไม่มีขั้นต่ำ",
                    "ออเดอร์แรกในแอป ส่งฟรี ไม่มีขั้นต่ำ",
                ),
                _Copy(
                    "en",
                    "Free delivery on your first app order",
                    "Hi {{ first_name }}, place your first order in the Siam Mart app and delivery is on us.",
                    "Your first app order ships free, no minimum.",
                ),
            ),
        ),
        Offer(
            offer_id="beauty_cross_sell",
            name="Cross-sell: skincare bundle 20% off",
            play_type="cross_sell",
            channels=("email", "line", "in_app"),
            placements=("home", "checkout"),
            purpose=MARKETING,
            eligibility="frequency >= 2 and average_order_value >= 400 and churn_risk < 0.5",
            value=350.0,
            cost=60.0,
            conflict_group="growth",
            prior_propensity=0.08,
            templates=_templates(
                ("email", "line", "in_app"),
                _Copy(
                    "th",
                    "ชุดสกินแคร์ลด 20% สำหรับคุณ",
                    "คุณ{{ first_name }} เราคัดชุดสกินแคร์ที่เข้ากับสินค้าที่คุณชอบ ลด 20% ถึงสิ้นเดือนนี้",
                    "ชุดสกินแคร์ลด 20% ถึงสิ้นเดือนนี้ เฉพาะคุณ{{ first_name }}",
                ),
                _Copy(
                    "en",
                    "A skincare bundle, 20% off for you",
                    "Hi {{ first_name }}, we picked a skincare bundle to go with your favourites: "
                    "20% off until the end of the month.",
                    "Skincare bundle 20% off until month end, just for you.",
                ),
            ),
        ),
        Offer(
            offer_id="save_15_percent",
            name="Save: 15% off your next order",
            play_type="save",
            channels=("email", "sms", "line", "push", "in_app"),
            placements=("home", "contact_centre"),
            purpose=MARKETING,
            eligibility="churn_risk >= 0.5 and frequency >= 2",
            value=1200.0,
            cost=180.0,
            lever=1.2,
            conflict_group="retention",
            prior_propensity=0.12,
            templates=_templates(
                ("email", "sms", "line", "push", "in_app"),
                _Copy(
                    "th",
                    "เราคิดถึงคุณ รับส่วนลด 15%",
                    "คุณ{{ first_name }} ขอบคุณที่เป็นลูกค้า Siam Mart มาตลอด "
                    "รับส่วนลด 15% สำหรับออเดอร์ถัดไป ใช้ได้ 14 วัน",
                    "Siam Mart: คุณ{{ first_name }} รับส่วนลด 15% ออเดอร์ถัดไป ใช้ได้ 14 วัน",
                ),
                _Copy(
                    "en",
                    "We miss you: 15% off",
                    "Hi {{ first_name }}, thank you for shopping with Siam Mart. "
                    "Here is 15% off your next order, valid for 14 days.",
                    "Siam Mart: {{ first_name }}, 15% off your next order, valid 14 days.",
                ),
            ),
        ),
        Offer(
            offer_id="save_free_delivery",
            name="Save: free delivery for a month",
            play_type="save",
            channels=("line", "push", "email", "in_app"),
            placements=("home", "checkout", "contact_centre"),
            purpose=MARKETING,
            eligibility="churn_risk >= 0.35",
            value=600.0,
            cost=90.0,
            conflict_group="retention",
            prior_propensity=0.15,
            templates=_templates(
                ("line", "push", "email", "in_app"),
                _Copy(
                    "th",
                    "ส่งฟรีทั้งเดือน",
                    "คุณ{{ first_name }} รับสิทธิ์ส่งฟรีทุกออเดอร์ตลอด 30 วัน ไม่มีขั้นต่ำ",
                    "คุณ{{ first_name }} ส่งฟรีทุกออเดอร์ 30 วัน",
                ),
                _Copy(
                    "en",
                    "Free delivery for a month",
                    "Hi {{ first_name }}, enjoy free delivery on every order for the next 30 days.",
                    "{{ first_name }}, free delivery on every order for 30 days.",
                ),
            ),
        ),
        Offer(
            offer_id="winback_200_baht",
            name="Winback: ฿200 voucher",
            play_type="winback",
            channels=("email", "sms", "line"),
            placements=("contact_centre",),
            purpose=MARKETING,
            eligibility='lifecycle_stage in ("lapsed", "churned") or recency_days > 120',
            value=900.0,
            cost=200.0,
            conflict_group="retention",
            prior_propensity=0.06,
            templates=_templates(
                ("email", "sms", "line"),
                _Copy(
                    "th",
                    "บัตรกำนัล 200 บาท รอคุณอยู่",
                    "คุณ{{ first_name }} นานแล้วที่ไม่ได้เจอกัน รับบัตรกำนัล 200 บาท "
                    "เมื่อช้อปครบ 800 บาท ภายใน 21 วัน",
                    "Siam Mart: คุณ{{ first_name }} รับบัตรกำนัล 200 บาท ช้อปครบ 800 ใช้ได้ 21 วัน",
                ),
                _Copy(
                    "en",
                    "A ฿200 voucher is waiting for you",
                    "Hi {{ first_name }}, it has been a while. Take ฿200 off an order of ฿800 or more "
                    "within 21 days.",
                    "Siam Mart: {{ first_name }}, ฿200 off orders over ฿800, valid 21 days.",
                ),
            ),
        ),
        Offer(
            offer_id="service_recovery_apology",
            name="Service recovery: apology and ฿150 credit",
            play_type="service_recovery",
            channels=("email", "line", "in_app"),
            placements=("contact_centre", "home"),
            purpose=SERVICE,
            eligibility="negative_feedback_streak >= 2 or open_tickets > 0",
            value=1500.0,
            cost=150.0,
            conflict_group="service",
            prior_propensity=0.35,
            templates=_templates(
                ("email", "line", "in_app"),
                _Copy(
                    "th",
                    "ขออภัยในประสบการณ์ที่ไม่ดี",
                    "คุณ{{ first_name }} เราขออภัยที่ประสบการณ์ล่าสุดไม่เป็นไปตามที่คาดหวัง "
                    "เราได้เพิ่มเครดิต 150 บาทในบัญชีของคุณ และทีมงานจะติดต่อกลับภายใน 24 ชั่วโมง",
                    "คุณ{{ first_name }} ขออภัยในความไม่สะดวก เราเพิ่มเครดิต 150 บาทให้แล้ว",
                ),
                _Copy(
                    "en",
                    "We are sorry",
                    "Hi {{ first_name }}, we are sorry your recent experience fell short. We have added "
                    "฿150 credit to your account and our team will call you back within 24 hours.",
                    "{{ first_name }}, sorry for the trouble: ฿150 credit is in your account.",
                ),
            ),
        ),
        Offer(
            offer_id="replenish_reminder",
            name="Replenishment: time to restock",
            play_type="replenishment",
            channels=("line", "push", "email", "in_app"),
            placements=("home",),
            purpose=MARKETING,
            eligibility="frequency >= 3 and recency_days >= 25 and recency_days <= 45",
            value=450.0,
            cost=0.0,
            conflict_group="growth",
            prior_propensity=0.2,
            templates=_templates(
                ("line", "push", "email", "in_app"),
                _Copy(
                    "th",
                    "ถึงเวลาเติมของใช้แล้ว",
                    "คุณ{{ first_name }} ของใช้ที่ซื้อประจำน่าจะใกล้หมดแล้ว สั่งซ้ำได้ในคลิกเดียว",
                    "คุณ{{ first_name }} ของใช้ประจำใกล้หมดหรือยัง สั่งซ้ำในคลิกเดียว",
                ),
                _Copy(
                    "en",
                    "Time to restock",
                    "Hi {{ first_name }}, your usual items are probably running low. Reorder in one tap.",
                    "{{ first_name }}, running low? Reorder your usual items in one tap.",
                ),
            ),
        ),
        Offer(
            offer_id="double_points_weekend",
            name="Engagement: double points weekend",
            play_type="engagement",
            channels=("push", "line", "in_app"),
            placements=("home", "checkout"),
            purpose=MARKETING,
            eligibility='lifecycle_stage in ("active", "reactivated")',
            value=160.0,
            cost=30.0,
            prior_propensity=0.22,
            templates=_templates(
                ("push", "line", "in_app"),
                _Copy(
                    "th",
                    "คะแนนสองเท่าสุดสัปดาห์นี้",
                    "คุณ{{ first_name }} ช้อปสุดสัปดาห์นี้รับคะแนนสองเท่าทุกออเดอร์",
                    "คุณ{{ first_name }} สุดสัปดาห์นี้รับคะแนนสองเท่าทุกออเดอร์",
                ),
                _Copy(
                    "en",
                    "Double points this weekend",
                    "Hi {{ first_name }}, earn double points on every order this weekend.",
                    "{{ first_name }}, double points on every order this weekend.",
                ),
            ),
        ),
    ]
