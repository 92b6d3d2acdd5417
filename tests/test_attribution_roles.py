"""A gold value named as another contrasted entity's (attribution/roles.py) and where locate puts it."""

from __future__ import annotations

import time

from silverbullet.attribution.locate import locate
from silverbullet.attribution.roles import contrast_sets, named
from silverbullet.attribution.steps import analyse_step

PICK_Q = (
    "One dwarf can mine 12 pounds of ore per day with his bare hands. He can mine twice as much with an iron "
    "pickaxe and 50% more with a steel pickaxe than with an iron pickaxe. How many pounds of ore can 40 "
    "dwarves with steel pickaxes mine in a day?"
)
PICK_GOLD = (
    "With an iron pickaxe a dwarf mines 12 * 2 = <<12*2=24>>24 pounds a day.\n"
    "With a steel pickaxe a dwarf mines 24 * 1.5 = <<24*1.5=36>>36 pounds a day.\n"
    "40 dwarves mine 36 * 40 = <<36*40=1440>>1440 pounds.\nA: 1440"
)
SHOP_Q = (
    "Ellen eats two carrots, a salad, and a yogurt. The salad costs $6 and the yogurt half as much. She pays "
    "$11 in all. What do the two carrots cost?"
)
SHOP_GOLD = "The yogurt costs 6 / 2 = <<6/2=3>>3 dollars.\nThe carrots cost 11 - 6 - 3 = <<11-6-3=2>>2 dollars.\nA: 2"


def test_contrast_sets_are_modifiers_of_one_head_and_list_items() -> None:
    assert frozenset({"iron", "steel"}) in contrast_sets(PICK_Q)
    assert frozenset({"carrot", "salad", "yogurt"}) in contrast_sets(SHOP_Q)
    assert contrast_sets("Tom has 5 apples. He eats 2. How many are left?") == ()


def test_named_reads_prose_not_annotations() -> None:
    step = analyse_step("The steel rate is 12 * 2 = <<iron*2=24>>24 pounds")
    assert named(step) >= {"steel", "rate", "pound"}
    assert "iron" not in named(step)


def test_gold_value_under_another_entitys_name_is_the_first_fault() -> None:
    # 24 is the gold's iron-pickaxe rate; naming it the steel rate is the error, not the later step
    # that multiplies it (the dataflow check alone blames step 1)
    cand = (
        "A dwarf with a steel pickaxe mines 12 * 2 = <<12*2=24>>24 pounds a day.\n"
        "40 dwarves with steel pickaxes mine 24 * 40 = <<24*40=960>>960 pounds.\nA: 960"
    )
    a = locate(PICK_Q, cand, PICK_GOLD)
    assert a.first_faulty_step == 0
    assert a.error_type == "conceptual"
    assert a.evidence["rule"] == "misnamed_quantity"
    assert a.evidence["named"] == "steel" and a.evidence["reference_names"] == ["iron"]
    assert a.evidence["used_by_step"] == 1


def test_same_value_under_its_own_name_keeps_the_later_step() -> None:
    cand = (
        "A dwarf with an iron pickaxe mines 12 * 2 = <<12*2=24>>24 pounds a day.\n"
        "40 dwarves mine 24 * 40 = <<24*40=960>>960 pounds.\nA: 960"
    )
    a = locate(PICK_Q, cand, PICK_GOLD)
    assert a.first_faulty_step == 1
    assert a.evidence.get("rule") != "misnamed_quantity"


def test_list_item_misnamed_and_a_reworded_step_is_not() -> None:
    wrong = "The carrot costs 6 / 2 = <<6/2=3>>3 dollars.\nIn all 3 * 2 = <<3*2=6>>6 dollars.\nA: 6"
    a = locate(SHOP_Q, wrong, SHOP_GOLD)
    assert (a.first_faulty_step, a.evidence["rule"]) == (0, "misnamed_quantity")
    # reworded ("dessert" is no member of the question's list): the later step stays the fault
    reworded = "The dessert costs 6 / 2 = <<6/2=3>>3 dollars.\nIn all 3 * 2 = <<3*2=6>>6 dollars.\nA: 6"
    assert locate(SHOP_Q, reworded, SHOP_GOLD).first_faulty_step == 1


def test_a_step_naming_two_members_is_not_misnamed() -> None:
    cand = (
        "Iron and steel pickaxes: an iron one mines 12 * 2 = <<12*2=24>>24 pounds a day.\n"
        "40 dwarves mine 24 * 40 = <<24*40=960>>960 pounds.\nA: 960"
    )
    assert locate(PICK_Q, cand, PICK_GOLD).first_faulty_step == 1


def test_a_long_run_of_letters_is_read_in_linear_time() -> None:
    # questions are untrusted input too: an unanchored list regex took 0.4 s on 5,000 letters, quadratic
    q = "a" * 20_000 + ". " + "d, " * 5_000
    t = time.thread_time()
    contrast_sets.__wrapped__(q)
    assert time.thread_time() - t < 0.5
