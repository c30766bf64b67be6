/* The course's drills (lib/drills/_widget.py writes the markup and the bank of questions; this makes them work).

   Each <div class="drills"> holds its bank as JSON (<script type="application/json" class="drills-data">:
   per generator, draws of {prompt, answer, answer_text, steps, unit, rel_tol}) and, per generator, a
   <div class="drill"> with the first draw written out. On load each drill shows a random draw; "Check" (or Enter)
   says "Right: <answer> <unit>" or "Not quite" with the worked solution, in an aria-live region; "Another one"
   draws another. On the interview sheet a timer starts with Start or the first answer, and the score counts the
   questions answered right. No network, no dependency. */
(function () {
  "use strict";

  /* A typed number: "1,234,567", "1 234 567", "1_234", "1.5e6", "1.5×10^6", "−3", "2.5M"; NaN if it is none. */
  function parseAnswer(text) {
    var s = String(text).trim().replace(/[\s\u00a0\u202f_']/g, "").replace(/\u2212/g, "-");
    if (/^[-+]?\d{1,3}(,\d{3})+(\.\d*)?([eE][-+]?\d+)?[kMGB]?$/.test(s)) s = s.replace(/,/g, "");
    s = s.replace(/^([-+]?[\d.]+)(?:[x×*]10(?:\^|\*\*))([-+]?\d+)$/, "$1e$2");
    var suffix = /^([-+]?(?:\d+\.?\d*|\.\d+))([kMGB])$/.exec(s);  // 2.5M: 2.5e6, exactly
    if (suffix) s = suffix[1] + "e" + { k: 3, M: 6, G: 9, B: 9 }[suffix[2]];
    if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) return NaN;
    return Number(s);
  }

  function accepts(question, value) {
    if (!question.rel_tol) return value === Number(question.answer);
    return Math.abs(value - question.answer) <= question.rel_tol * Math.abs(question.answer);
  }

  /* Plain text with `backticks` for code into `parent`, as text nodes and <code> (never as HTML). */
  function fill(parent, text) {
    parent.textContent = "";
    String(text).split("`").forEach(function (part, i) {
      if (i % 2) {
        var code = document.createElement("code");
        code.textContent = part;
        parent.appendChild(code);
      } else if (part) {
        parent.appendChild(document.createTextNode(part));
      }
    });
  }

  function steps(list, question) {
    list.textContent = "";
    question.steps.forEach(function (step) {
      var li = document.createElement("li");
      fill(li, step);
      list.appendChild(li);
    });
  }

  function Drill(el, item, onCheck, onStart) {
    var input = el.querySelector(".drill-input");
    var result = el.querySelector(".drill-result");
    var key = el.querySelector(".drill-key");
    var current = -1;
    var drill = { el: el, right: false };

    drill.draw = function () {
      var n = item.bank.length;
      current = n < 2 ? 0 : (current + 1 + Math.floor(Math.random() * (n - 1))) % n;  // never the same twice
      var q = item.bank[current];
      fill(el.querySelector(".drill-prompt"), q.prompt);
      key.querySelector("p").textContent = (q.answer_text + " " + q.unit).trim();
      steps(key.querySelector("ol"), q);
      input.value = "";
      input.removeAttribute("aria-invalid");
      result.textContent = "";
      result.className = "drill-result";
      drill.right = false;
    };

    function check(event) {
      event.preventDefault();
      onStart();
      var q = item.bank[current];
      var value = parseAnswer(input.value);
      var verdict = document.createElement("p");
      result.textContent = "";
      result.appendChild(verdict);
      drill.right = !isNaN(value) && accepts(q, value);
      if (isNaN(value)) {
        verdict.textContent = "Type a number, such as 1,234 or 1.2e6.";
        result.className = "drill-result drill-invalid";
      } else if (drill.right) {
        verdict.textContent = ("Right: " + q.answer_text + " " + q.unit).trim();
        result.className = "drill-result drill-right";
      } else {
        verdict.textContent = "Not quite. The worked solution:";
        result.className = "drill-result drill-wrong";
        var list = document.createElement("ol");
        steps(list, q);
        var answer = document.createElement("p");
        answer.textContent = ("Answer: " + q.answer_text + " " + q.unit).trim();
        result.appendChild(list);
        result.appendChild(answer);
      }
      input.setAttribute("aria-invalid", String(!drill.right));
      onCheck();
    }

    el.querySelector(".drill-form").addEventListener("submit", check);
    var next = el.querySelector(".drill-next");
    if (next) next.addEventListener("click", function () { drill.draw(); onCheck(); input.focus(); });
    drill.draw();
    return drill;
  }

  function setUp(root) {
    var items = JSON.parse(root.querySelector(".drills-data").textContent);
    var timer = root.querySelector(".drills-timer");
    var score = root.querySelector(".drills-score");
    var start = root.querySelector(".drills-start");
    var started = null, ticking = null, drills = [];

    function tick() {
      var s = Math.floor((Date.now() - started) / 1000);
      timer.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    }
    function onStart() {
      if (!timer || started !== null) return;
      started = Date.now();
      ticking = setInterval(tick, 1000);
      tick();
      start.textContent = "New sheet";
    }
    function onCheck() {
      if (!score) return;
      var right = drills.filter(function (d) { return d.right; }).length;
      score.textContent = right + " of " + drills.length + " right";
    }

    root.querySelectorAll(".drill").forEach(function (el) {
      drills.push(Drill(el, items[Number(el.dataset.index)], onCheck, onStart));
    });
    if (start) {
      start.addEventListener("click", function () {
        if (started !== null) {  // a new sheet: other numbers, the clock and the score from zero
          clearInterval(ticking);
          started = null;
          drills.forEach(function (d) { d.draw(); });
          onCheck();
        }
        onStart();
        root.querySelector(".drill-input").focus();
      });
    }
    root.classList.add("drills-ready");
  }

  if (typeof document !== "undefined") {
    var run = function () { document.querySelectorAll("div.drills").forEach(setUp); };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
    else run();
  }
  if (typeof module !== "undefined") module.exports = { parseAnswer: parseAnswer, accepts: accepts };
})();
