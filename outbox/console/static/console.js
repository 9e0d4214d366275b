// The operator console's only script: "select all" on a listing. Everything else works
// without it (plain links and forms).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input[data-select-all]").forEach(function (all) {
    all.addEventListener("change", function () {
      var form = all.closest("form");
      if (!form) return;
      form.querySelectorAll('input[type="checkbox"][name="id"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
});
