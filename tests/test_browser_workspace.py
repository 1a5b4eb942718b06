"""A class in one workspace, in real browsers (issue 24): the teacher runs a lesson, presses one button, and the
workspace opens with their runs in it, its link and a QR code; a student's browser opens the link and sees, without
doing anything, which workspace it is in and the teacher's comparison with its curves, results and reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip

pytestmark = pytest.mark.browser

sync_api = playwright_or_skip()


def _wait(page, selector: str, text: str, timeout_s: float = 120) -> None:
    page.wait_for_function(
        "([sel, text]) => { const el = document.querySelector(sel); return el && el.innerText.includes(text); }",
        arg=[selector, text],
        timeout=timeout_s * 1000,
    )


def _shot(page, name: str) -> None:
    if os.environ.get("CNNCOMPARE_SCREENSHOTS"):
        out = Path(os.environ["CNNCOMPARE_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / name))


def test_a_teacher_opens_a_class_workspace_and_a_student_sees_the_comparison(launched_app):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            teacher = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            teacher.goto(launched_app.url)
            _wait(teacher, "#cc-workspace", "Private: your runs are seen only in this browser")
            teacher.get_by_role("tab", name="Learn").click()
            teacher.click("#preset-features")
            _wait(teacher, "#ft-preset", "frozen feature extractors")
            teacher.click("#ft-estimate")
            _wait(teacher, "#ft-estimate-out", "Estimate", timeout_s=300)
            teacher.click("#ft-start")
            _wait(teacher, "#ft-status", "What the runs showed", timeout_s=400)
            reading = teacher.inner_text("#ft-status").split("What the runs showed:")[1].split("\n")[0].strip()
            # the projector: Start folded the estimate, so the buttons, the reading and the curves share one screen
            assert teacher.locator("#ft-estimate-out details").get_attribute("open") is None
            teacher.wait_for_timeout(500)
            for sel in ("#ft-start", "#ft-stop", "#ft-progress", "#ft-status", "#ft-curves"):
                box = teacher.locator(sel).bounding_box()
                assert box and box["y"] >= 0 and box["y"] + box["height"] <= 720, (sel, box)
            _shot(teacher, "finetune-done-1280x720.png")

            teacher.get_by_role("tab", name="Class").click()
            teacher.click("#class-start")
            _wait(teacher, "#class-link", "?workspace=")
            _wait(teacher, "#cc-workspace", "You opened it with your runs")
            assert teacher.locator("#class-link img[alt^='QR code']").count() == 1
            link = teacher.inner_text("#class-link").split("scan the code):")[-1].strip()
            _shot(teacher, "class-teacher-1280x720.png")

            student = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
            student.goto(link)
            _wait(student, "#cc-workspace", "You are in a class workspace", timeout_s=60)
            student.wait_for_function(
                "() => document.querySelector('#class-status') && "
                "document.querySelector('#class-status').offsetParent !== null"
            )  # landed
            assert "You opened it" not in student.inner_text("#cc-workspace")
            _wait(student, "#class-status", "The class's latest comparison (by the teacher", timeout_s=60)
            status = student.inner_text("#class-status")
            assert reading and reading in status  # the lesson's reading, as the teacher's page said it
            assert "vgg16@head" in status and "resnet50@head" in status
            student.wait_for_function("() => document.querySelectorAll('#class-curves .js-plotly-plot').length >= 1")
            _wait(student, "#class-table", "resnet50@head")
            assert not student.locator("#class-start").is_visible()  # in a workspace: no second one to start
            _shot(student, "class-student-390x844.png")
            # the teacher's runs came along: the student may predict with them
            student.get_by_role("tab", name="Predict").click()
            student.locator("#pred-runs input").click()
            assert student.get_by_role("option", name="vgg16@head").count() >= 1
        finally:
            browser.close()
